//! The compiler library's error type. Variants say whose fault it is: the model's
//! (`InvalidModel`, `UnsupportedOps`, `Node`, `Shape`), the board file's (`Board`), the
//! user's options or data (`Options`, `Runtime` for calibration images the model cannot
//! run), the budget's (`Allocation`), the file system's (`Io`), or hassc's own (`Verify`: a
//! pass broke an invariant; `Internal`: anything else that should never happen).

use crate::board::BoardError;
use std::path::PathBuf;

/// A node the frontend cannot lower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedNode {
    /// Node name.
    pub name: String,
    /// ONNX op type (with its domain when not the default one).
    pub op_type: String,
}

/// Why compilation failed.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// A file could not be read or written. (The OS error is the source: printed as a
    /// chain, `path: error`, it would appear twice if the message repeated it.)
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a well-formed ONNX model.
    #[error("{} is not a valid ONNX model: {reason}", path.display())]
    InvalidModel {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The model uses ops hassc cannot compile; every such node is listed.
    #[error("the model has {} unsupported node(s): {}. Supported ops: {}", .nodes.len(), list_nodes(.nodes), crate::frontend::SUPPORTED_OPS.join(", "))]
    UnsupportedOps {
        /// Every unsupported node, in model order.
        nodes: Vec<UnsupportedNode>,
    },
    /// A supported op used in a way hassc cannot compile.
    #[error("node {node} ({op_type}): {reason}")]
    Node {
        /// Node name.
        node: String,
        /// ONNX op type.
        op_type: String,
        /// What is wrong.
        reason: String,
    },
    /// Shapes do not fit together.
    #[error("shape inference failed at {node}: {reason}")]
    Shape {
        /// Node name.
        node: String,
        /// What does not fit.
        reason: String,
    },
    /// A pass left a graph the verifier rejects: a bug in hassc.
    #[error("internal error: after {pass}, the graph is invalid: {}", .problems.join("; "))]
    Verify {
        /// The pass (or "import").
        pass: &'static str,
        /// Every broken invariant.
        problems: Vec<String>,
    },
    /// The board file is invalid.
    #[error(transparent)]
    Board(#[from] BoardError),
    /// No design fits the board.
    #[error(transparent)]
    Allocation(#[from] crate::alloc::AllocationError),
    /// A command-line or configuration value is invalid, or does not fit the model (labels,
    /// calibration images of the wrong shape).
    #[error("{0}")]
    Options(String),
    /// The runtime could not run the compiled model on the given images.
    #[error(transparent)]
    Runtime(#[from] hass_runtime::RuntimeError),
    /// The compiled model could not be written as ONNX.
    #[error("cannot write the compiled model as ONNX: {0}")]
    Export(String),
    /// Something hassc guarantees did not hold: a bug, not the user's input.
    #[error("internal error: {0}. This is a bug in hassc; please report it with the command that caused it")]
    Internal(String),
}

impl CompileError {
    /// An [`CompileError::Internal`] error.
    pub(crate) fn internal(what: impl Into<String>) -> Self {
        CompileError::Internal(what.into())
    }
}

fn list_nodes(nodes: &[UnsupportedNode]) -> String {
    nodes.iter().map(|n| format!("{} ({})", n.name, n.op_type)).collect::<Vec<_>>().join(", ")
}

/// Shorthand for results in this crate.
pub type Result<T, E = CompileError> = std::result::Result<T, E>;
