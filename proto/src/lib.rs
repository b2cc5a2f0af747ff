//! The hassc artifact contract: the only thing the compiler and the runtime share.
//!
//! A `.hass` file is a small container ([`container`]) holding two sections: the
//! [`Schedule`] (protobuf, generated from `schema/artifact.proto`) and the raw
//! little-endian weights that the schedule's [`WeightRef`]s point into.
//!
//! Besides the bytes, the contract holds what both sides must compute alike: the meaning of
//! the activations, pooling and element-wise kinds ([`semantics`]) and the output sizes of
//! windowed ops ([`geometry`]), and the fixed-point arithmetic of the datapath ([`fixed`]).
//!
//! This crate knows nothing of ONNX, of the IR, of boards beyond their figures, or of how
//! layers are executed: it encodes, decodes, checks integrity and defines.

#[allow(missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/hass.artifact.rs"));
}

pub mod container;
pub mod encoding;
pub mod fixed;
pub mod geometry;
pub mod packed;
pub mod semantics;
pub mod weights;

pub use container::{decode, encode, open, ContainerError, Decoded, FORMAT_VERSION, MAGIC, MIN_FORMAT_VERSION};
pub use generated::*;
pub use weights::WeightsWriter;
