//! The intermediate representation: a petgraph graph of CNN layers with static per-image
//! shapes, and a pool of weight tensors referenced by id.
//!
//! Architecture invariant: `ir` knows nothing of ONNX, tract, protobuf, boards or the
//! runtime. It takes the meaning of activations, pooling and element-wise kinds and the
//! window geometry from the artifact contract (`hass_proto::semantics`, `::geometry`), so
//! compiler and runtime agree on them by construction.

mod display;
mod graph;
mod op;
pub mod verify;

pub use graph::{Graph, Node, NodeId};
pub use hass_proto::semantics::{Activation, EltwiseKind};
pub use op::{per_channel_len, Conv, Dense, Op, Padding, Pool, PoolKind, ReshapeTarget, ScaleShift};

/// A per-image shape: the batch dimension is implicit and leading.
pub type Shape = Vec<usize>;

/// Largest tensor hassc accepts, in values (per image for activations): 2^31. Shapes come
/// from untrusted models, so every product of dimensions is checked against it instead of
/// being allowed to wrap.
pub const MAX_ELEMENTS: usize = 1 << 31;

/// The number of values of `dims`, or `None` beyond [`MAX_ELEMENTS`].
pub fn checked_elements(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).filter(|&n| n <= MAX_ELEMENTS)
}

/// Index of a tensor in a [`WeightPool`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WeightId(pub u32);

/// A constant f32 tensor (weights, biases, per-channel factors).
#[derive(Clone, Debug, PartialEq)]
pub struct Weight {
    /// Dimensions, row-major.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f32>,
}

/// All constant tensors of a graph. Ids are never reused; tensors no node references any
/// more are simply not emitted by the backend.
#[derive(Clone, Debug, Default)]
pub struct WeightPool {
    tensors: Vec<Weight>,
}

impl WeightPool {
    /// Store a tensor and return its id.
    pub fn add(&mut self, shape: Vec<usize>, data: Vec<f32>) -> WeightId {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        self.tensors.push(Weight { shape, data });
        WeightId(self.tensors.len() as u32 - 1)
    }

    /// The tensor with id `id`, if any.
    pub fn get(&self, id: WeightId) -> Option<&Weight> {
        self.tensors.get(id.0 as usize)
    }

    /// The tensor with id `id`; panics on an id from another pool (a compiler bug).
    pub fn tensor(&self, id: WeightId) -> &Weight {
        &self.tensors[id.0 as usize]
    }

    /// Mutable access to a tensor.
    pub fn tensor_mut(&mut self, id: WeightId) -> &mut Weight {
        &mut self.tensors[id.0 as usize]
    }
}
