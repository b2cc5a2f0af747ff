//! The runtime's error type: each variant says whose fault it is.

use hass_proto::ContainerError;

/// Why an artifact could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The container is damaged, truncated or of another version.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// The container is intact but its schedule is inconsistent (a compiler bug or a
    /// hand-edited file).
    #[error("invalid artifact: layer {layer:?}: {reason}")]
    InvalidSchedule {
        /// Layer name (or a section name for global problems).
        layer: String,
        /// What is wrong.
        reason: String,
    },
    /// The caller's input does not fit the artifact.
    #[error("bad input: {0}")]
    Input(String),
}

pub(crate) fn invalid(layer: &str, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::InvalidSchedule { layer: layer.to_string(), reason: reason.into() }
}
