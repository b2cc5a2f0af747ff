//! hass-runtime: loads a hassc artifact and executes it on the CPU, layer by layer, as the
//! dataflow accelerator would compute it.
//!
//! ```no_run
//! let plan = hass_runtime::load_file(std::path::Path::new("model.hass"))?;
//! let input = hass_runtime::Tensor::new(vec![1, 1, 28, 28], vec![0.0; 784])?;
//! let outputs = hass_runtime::run(&plan, &input)?;
//! # Ok::<(), hass_runtime::RuntimeError>(())
//! ```
//!
//! Architecture invariant: this crate knows nothing of ONNX, tract or the compiler; the
//! artifact (crate `hass-proto`) is its only input, and [`load`] validates all of it.

mod error;
pub mod exec;
pub mod kernels;
pub mod load;
pub mod memory;
pub mod npy;
pub mod output;
pub mod plan;
pub mod sim;
pub mod sparse_rows;
pub mod stats;
mod tensor;
pub mod trace;

pub use error::RuntimeError;
pub use exec::run;
pub use load::{load_bytes, load_file};
pub use plan::{Activation, Plan};
pub use tensor::Tensor;
