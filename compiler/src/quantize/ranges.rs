//! Activation ranges: the largest magnitude of every value, and of what each nonlinear
//! activation reads, over a set of images run through the float model, with a sample of
//! the values for choosing formats by their error.

use crate::board::Board;
use crate::error::Result;
use crate::ir::Graph;
use hass_runtime::plan::{Op, Plan};
use hass_runtime::trace::Trace;
use hass_runtime::Tensor;

/// Values kept per stream for the error of a format: enough for a stable estimate.
const SAMPLE: usize = 1 << 16;

/// What was seen of one stream on the images.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    /// The largest magnitude, over every value.
    pub max_abs: f64,
    /// Every k-th value (the same k for the whole stream), at most [`SAMPLE`] of them.
    pub sample: Vec<f32>,
}

impl Seen {
    fn of(values: &[f32]) -> Seen {
        let stride = values.len().div_ceil(SAMPLE).max(1);
        Seen {
            max_abs: values.iter().fold(0f64, |m, &v| m.max((v as f64).abs())),
            sample: values.iter().step_by(stride).copied().collect(),
        }
    }
}

/// Per value of the float plan (layers in the backend's order).
#[derive(Clone, Debug, PartialEq)]
pub struct Ranges {
    /// The input.
    pub input: Seen,
    /// Each layer's output.
    pub outputs: Vec<Seen>,
    /// Each layer's value before its fused activation, where the activation reads it (see
    /// [`hass_proto::fixed::reads_pre_activation`]; `None` for the others).
    pub pre_activation: Vec<Option<Seen>>,
}

/// Run `graph` in float on `images` and take every value's range; with the run's first
/// output, and what `also` makes of the run (the plan and every value).
pub fn measure<T>(
    graph: &Graph,
    board: &Board,
    images: &Tensor,
    also: impl FnOnce(&Plan, &Trace) -> T,
) -> Result<(Ranges, Tensor, T)> {
    let plan = crate::sparsity::statistics::calibration_plan(graph, board, images, None)?;
    let trace = Trace::new(&plan, images)?;
    let also = also(&plan, &trace);
    let outputs = (1..=plan.layers.len()).map(|v| Seen::of(trace.value(v))).collect();
    let pre_activation = plan
        .layers
        .iter()
        .map(|layer| {
            let mut bare = layer.clone();
            let activation = match &mut bare.op {
                Op::Conv(c) => &mut c.activation,
                Op::Dense(d) => &mut d.activation,
                Op::Eltwise { activation, .. } | Op::ScaleShift { activation, .. } => activation,
                _ => return None,
            };
            // Only these have a pre-activation format (ReLU and Clip act on the output's):
            // the layer is not computed a second time for the others.
            if !hass_proto::fixed::reads_pre_activation(*activation) {
                return None;
            }
            *activation = None;
            Some(Seen::of(&trace.compute_layer(&plan, &bare)))
        })
        .collect();
    let mut output_shape = vec![images.batch()];
    output_shape.extend_from_slice(plan.value_shape(plan.outputs[0]));
    let output = Tensor::new(output_shape, trace.value(plan.outputs[0]).to_vec())?;
    Ok((Ranges { input: Seen::of(trace.value(0)), outputs, pre_activation }, output, also))
}

/// `n` images of `graph`'s input shape drawn from the standard normal distribution
/// (Box-Muller over Xoshiro256++, a fixed algorithm: the same seed gives the same images).
pub fn standard_normal_images(graph: &Graph, n: usize, seed: u64) -> Tensor {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut shape = vec![n];
    shape.extend_from_slice(graph.shape(graph.input));
    let len: usize = shape.iter().product();
    let data = (0..len)
        .map(|_| {
            let (u, v): (f64, f64) = (rng.random(), rng.random());
            ((-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect();
    Tensor::new(shape, data).expect("the shape's product is the length")
}
