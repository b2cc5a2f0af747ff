//! hassc: compiles ONNX CNNs into schedules for dataflow FPGA accelerators.
//!
//! The flow is `frontend` (ONNX -> [`ir::Graph`]) -> [`passes`] (fold, fuse, infer shapes;
//! verified after each) -> [`backend`] (artifact bytes). [`board`] reads target boards,
//! [`report`] renders what users read. The runtime crate executes what `backend` writes.
//!
//! ```no_run
//! let board = hassc::board::Board::resolve("u250")?;
//! let compiled = hassc::compile(std::path::Path::new("model.onnx"), &board, &Default::default())?;
//! println!("{:.0} images/s", compiled.design.throughput_fps());
//! std::fs::write("model.hass", &compiled.artifact)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod backend;
pub mod board;
pub mod design;
mod error;
pub mod frontend;
pub mod hw;
pub mod ir;
pub mod passes;
pub mod report;
pub mod search;
pub mod sparsity;

pub use error::{CompileError, Result, UnsupportedNode};

/// Import an ONNX model and run the pass pipeline: the graph the backend and reports see.
pub fn load_model(path: &std::path::Path) -> Result<ir::Graph> {
    let mut graph = {
        let _span = tracing::info_span!("import", model = %path.display()).entered();
        frontend::import_file(path)?
    };
    passes::run_pipeline(&mut graph)?;
    Ok(graph)
}

/// A compiled model: its graph, its hardware design and the artifact bytes.
pub struct Compiled {
    /// The graph after the pass pipeline.
    pub graph: ir::Graph,
    /// The allocated design.
    pub design: design::Design,
    /// The `.hass` bytes.
    pub artifact: Vec<u8>,
}

impl Compiled {
    /// The compiled model (pruned and thresholded, if asked) as standard ONNX.
    pub fn to_onnx(&self) -> Result<Vec<u8>> {
        frontend::export::to_onnx(&self.graph).map_err(CompileError::Options)
    }
}

/// Compile `model` for `board`: import, passes, pruning and thresholds, calibration,
/// allocation, artifact.
pub fn compile(model: &std::path::Path, board: &board::Board, options: &design::DesignOptions) -> Result<Compiled> {
    compile_graph(load_model(model)?, board, options)
}

/// Search per-layer sparsity knobs on the calibration images of `options`
/// ([`sparsity::search`]), then compile with the knobs it chose, calibrated on the same images.
pub fn compile_searched(
    model: &std::path::Path,
    board: &board::Board,
    options: &design::DesignOptions,
    search: &sparsity::search::SearchOptions,
) -> Result<(Compiled, sparsity::search::SearchResult)> {
    let graph = load_model(model)?;
    let images = options.calibration.clone().ok_or_else(|| {
        CompileError::Options("the sparsity search needs calibration images: give --calib X.npy".into())
    })?;
    if options.pruning.any() {
        return Err(CompileError::Options(
            "the sparsity search chooses the thresholds itself: drop the pruning and threshold options, or use --search none".into(),
        ));
    }
    let mut result = sparsity::search::search(&graph, board, options, &images, search)?;
    // The search measured its statistics on a subset of the images; the reported designs
    // are measured on all of them.
    let free_zeros = compile_graph(graph.clone(), board, options)?.design.throughput_fps();
    let options = design::DesignOptions { pruning: result.config.clone(), ..options.clone() };
    let compiled = compile_graph(graph, board, &options)?;
    result.summary.free_zeros.throughput_fps = free_zeros;
    result.summary.chosen.throughput_fps = compiled.design.throughput_fps();
    Ok((compiled, result))
}

/// Compile a graph fresh from [`load_model`].
pub fn compile_graph(mut graph: ir::Graph, board: &board::Board, options: &design::DesignOptions) -> Result<Compiled> {
    let mut options = options.clone();
    if options.pruning.any() {
        let _span = tracing::info_span!("prune").entered();
        sparsity::prune::apply(&mut graph, &options.pruning)?;
    }
    if let Some(images) = &options.calibration {
        let layers = sparsity::statistics::measured(&graph, board, images)?;
        let source = format!("measured on {} calibration images", images.batch());
        options.sparsity = design::SparsitySource::Measured { layers, source };
    } else if options.pruning.any() && options.sparsity == design::SparsitySource::Dense {
        let layers = sparsity::statistics::from_weights(&graph);
        let source = "pruned weights only (no --calib): activation sparsity not measured".to_string();
        options.sparsity = design::SparsitySource::Measured { layers, source };
    }
    let design = design::design(&graph, board, &options)?;
    let _span = tracing::info_span!("backend").entered();
    let artifact = backend::emit(&graph, board, &design.layers);
    Ok(Compiled { graph, design, artifact })
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for unit tests: execute a small IR graph through the real backend and runtime.
    use crate::ir::Graph;

    /// Emit `graph`, load it in the runtime and run it on a deterministic input.
    pub fn run_graph(graph: &Graph, seed: u32) -> Vec<f32> {
        let board = crate::board::Board::resolve("u250").unwrap();
        let bytes = crate::backend::emit(graph, &board, &Default::default());
        let plan = hass_runtime::load_bytes(&bytes).expect("the backend writes valid artifacts");
        let mut shape = vec![2];
        shape.extend_from_slice(graph.shape(graph.input));
        let len: usize = shape.iter().product();
        let data = (0..len as u32)
            .map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        let input = hass_runtime::Tensor::new(shape, data).unwrap();
        hass_runtime::run(&plan, &input).unwrap().remove(0).into_parts().1
    }

    /// Element-wise closeness relative to the largest magnitude.
    pub fn assert_close(a: &[f32], b: &[f32], tolerance: f32) {
        assert_eq!(a.len(), b.len());
        let scale = a.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tolerance * scale, "element {i}: {x} vs {y}");
        }
    }
}
