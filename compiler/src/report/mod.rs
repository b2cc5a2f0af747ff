//! What users read: the per-layer inspect table and its JSON form, and a Graphviz view.

mod artifact;
pub mod datapath;
mod design;
mod dot;
mod inspect;

pub use artifact::{summarize_artifact, ArtifactSummary};
pub use design::{report, DesignReport};
pub use dot::to_dot;
pub use inspect::{summarize, LayerSummary, ModelSummary};
