//! The hassc artifact contract: the only thing the compiler and the runtime share.
//!
//! A `.hass` file is a small container ([`container`]) holding two sections: the
//! [`Schedule`] (protobuf, generated from `schema/artifact.proto`) and the raw
//! little-endian weights that the schedule's [`WeightRef`]s point into.
//!
//! This crate knows nothing of ONNX, of the IR, of boards beyond their figures, or of how
//! layers are executed: it encodes, decodes and checks integrity.

#[allow(missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/hass.artifact.rs"));
}

pub mod container;
pub mod encoding;
pub mod weights;

pub use container::{decode, encode, ContainerError, FORMAT_VERSION, MAGIC, MIN_FORMAT_VERSION};
pub use generated::*;
pub use weights::WeightsWriter;
