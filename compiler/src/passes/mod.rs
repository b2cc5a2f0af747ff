//! The pass pipeline. Each pass is a function over the graph in its own file; the
//! verifier runs after each one, with the invariants of the phase the pass reaches.
//!
//! The order, and why:
//! 1. `infer_shapes` first: later passes need shapes (a constant Add is per-channel only
//!    for a known rank), and it resolves `auto_pad` and normalises per-channel constants.
//! 2. `remove_plumbing` next, so Identity/Dropout and dead nodes cannot hide a
//!    Conv -> BatchNorm or Conv -> Relu pair from the folds below.
//! 3. `fold_batchnorm` before `fuse_activation`: an affine can fold into a Conv only while
//!    no activation sits between them.
//! 4. `fuse_activation` last: it fuses into Conv, Dense, Add/Mul and ScaleShift stages,
//!    as a dataflow stage applies its activation on the way out.

mod fold_batchnorm;
mod fuse_activation;
mod infer_shapes;
mod remove_plumbing;

use crate::error::{CompileError, Result};
use crate::ir::verify::{verify, Phase};
use crate::ir::Graph;

/// A named graph transformation.
pub struct Pass {
    /// Name, as in `-v` output and errors.
    pub name: &'static str,
    /// What it does, in one line.
    pub description: &'static str,
    /// The phase the graph is in afterwards.
    pub phase: Phase,
    /// The transformation.
    pub run: fn(&mut Graph) -> Result<()>,
}

/// The pipeline, in order.
pub const PIPELINE: &[Pass] = &[
    Pass {
        name: "infer_shapes",
        description: "compute static shapes, resolve auto_pad, normalise per-channel constants",
        phase: Phase::Shaped,
        run: infer_shapes::run,
    },
    Pass {
        name: "remove_plumbing",
        description: "drop Identity/Dropout and nodes that reach no output",
        phase: Phase::Canonical,
        run: remove_plumbing::run,
    },
    Pass {
        name: "fold_batchnorm",
        description: "fold BatchNorm and constant Add/Mul into the producing Conv or Dense",
        phase: Phase::Canonical,
        run: fold_batchnorm::run,
    },
    Pass {
        name: "fuse_activation",
        description: "fuse activations into the stage that produces their input",
        phase: Phase::Canonical,
        run: fuse_activation::run,
    },
];

/// Verify the imported graph, then run every pass, verifying after each.
pub fn run_pipeline(graph: &mut Graph) -> Result<()> {
    run_pipeline_until(graph, PIPELINE.len())
}

/// What `hassc inspect --after` accepts: `import` (the graph as the frontend built it), then
/// each pass of [`PIPELINE`] by name.
pub fn stop_names() -> Vec<&'static str> {
    std::iter::once("import").chain(PIPELINE.iter().map(|p| p.name)).collect()
}

/// How many passes to run to stop after `name` (see [`stop_names`]).
pub fn passes_through(name: &str) -> Result<usize> {
    stop_names().iter().position(|&n| n == name).ok_or_else(|| {
        CompileError::Options(format!("there is no pass named {name:?}; the stops are: {}", stop_names().join(", ")))
    })
}

/// Verify the imported graph, then run the first `count` passes, verifying after each.
pub fn run_pipeline_until(graph: &mut Graph, count: usize) -> Result<()> {
    verify(graph, Phase::Imported).map_err(|problems| CompileError::Verify { pass: "import", problems })?;
    for pass in PIPELINE.iter().take(count) {
        let _span = tracing::info_span!("pass", name = pass.name).entered();
        let before = graph.nodes.node_count();
        (pass.run)(graph)?;
        verify(graph, pass.phase).map_err(|problems| CompileError::Verify { pass: pass.name, problems })?;
        tracing::debug!(nodes_before = before, nodes_after = graph.nodes.node_count(), "{}", pass.description);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testing {
    //! Small graphs for the passes' unit tests.
    use crate::ir::{Conv, Graph, NodeId, Op, Padding};

    /// Input `[c_in, hw, hw]` -> 3x3 conv (padding 1) with `c_out` filters and a bias.
    pub fn input_conv(c_in: usize, c_out: usize, hw: usize) -> (Graph, NodeId) {
        let mut g = Graph::default();
        g.input = g.add_node("x".into(), Op::Input { shape: vec![c_in, hw, hw] });
        let weight =
            g.weights.add(vec![c_out, c_in, 3, 3], (0..c_out * c_in * 9).map(|i| (i % 7) as f32 - 3.0).collect());
        let bias = Some(g.weights.add(vec![c_out], (0..c_out).map(|i| i as f32).collect()));
        let conv = Conv {
            weight,
            bias,
            stride: [1, 1],
            dilation: [1, 1],
            padding: Padding::Explicit([1; 4]),
            groups: 1,
            activation: None,
            input_threshold: None,
        };
        let id = g.add_node("conv".into(), Op::Conv(conv));
        g.connect(g.input, id, 0);
        (g, id)
    }

    /// Append a single-input node after `from` and return it.
    pub fn then(g: &mut Graph, from: NodeId, name: &str, op: Op) -> NodeId {
        let id = g.add_node(name.into(), op);
        g.connect(from, id, 0);
        id
    }
}
