//! hassc: compiles ONNX CNNs into schedules for dataflow FPGA accelerators.
//!
//! The flow is `frontend` (ONNX -> [`ir::Graph`]) -> [`passes`] (fold, fuse, infer shapes;
//! verified after each) -> [`backend`] (artifact bytes). [`board`] reads target boards,
//! [`report`] renders what users read. The runtime crate executes what `backend` writes.
//!
//! ```no_run
//! let board = hassc::board::Board::resolve("u250")?;
//! let compiled = hassc::compile(std::path::Path::new("model.onnx"), &board, &hassc::CompileOptions::default())?;
//! println!("{:.0} images/s", compiled.design.throughput_fps());
//! std::fs::write("model.hass", &compiled.artifact)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod alloc;
pub mod backend;
pub mod board;
pub mod design;
mod error;
pub mod frontend;
pub mod hw;
pub mod ir;
pub mod passes;
pub mod quantize;
pub mod report;
pub mod search;
pub mod sparsity;

pub use error::{CompileError, Result, UnsupportedNode};

/// Import an ONNX model and run the pass pipeline: the graph the backend and reports see.
pub fn load_model(path: &std::path::Path) -> Result<ir::Graph> {
    load_model_until(path, passes::PIPELINE.len())
}

/// Import an ONNX model and run the pipeline up to and including the pass named `stop`
/// (`import`: none), as `hassc inspect --after` shows it.
pub fn load_model_after(path: &std::path::Path, stop: &str) -> Result<ir::Graph> {
    load_model_until(path, passes::passes_through(stop)?)
}

fn load_model_until(path: &std::path::Path, passes: usize) -> Result<ir::Graph> {
    let mut graph = {
        let _span = tracing::info_span!("import", model = %path.display()).entered();
        frontend::import_file(path)?
    };
    passes::run_pipeline_until(&mut graph, passes)?;
    check_finite_weights(&graph)?;
    Ok(graph)
}

/// The accelerator has no NaN or infinity. Imported tensors are checked as they are read;
/// this catches what folding made of them (a huge scale over a tiny variance).
fn check_finite_weights(graph: &ir::Graph) -> Result<()> {
    for id in graph.nodes.node_indices() {
        let node = graph.node(id);
        for w in node.op.weight_ids() {
            let Some(bad) = graph.weights.get(w).and_then(|t| t.data.iter().find(|v| !v.is_finite())) else {
                continue;
            };
            return Err(CompileError::Node {
                node: node.name.clone(),
                op_type: node.op.kind_name(),
                reason: format!("its folded parameters hold {bad}; the accelerator has no NaN or infinity"),
            });
        }
    }
    Ok(())
}

/// A compiled model: its graph, its hardware design and the artifact bytes.
pub struct Compiled {
    /// The graph after the pass pipeline.
    pub graph: ir::Graph,
    /// The allocated design.
    pub design: design::Design,
    /// The `.hass` bytes.
    pub artifact: Vec<u8>,
    /// The fixed-point formats (`None` on the float datapath).
    pub quantization: Option<quantize::Quantization>,
    /// With calibration images, on the fixed-point datapath: % of them whose top-1 is the
    /// float model's.
    pub agreement_with_float: Option<f64>,
}

impl Compiled {
    /// The report's datapath block (`None` on the float datapath), read from the artifact.
    pub fn datapath_report(&self) -> Option<report::datapath::DatapathReport> {
        let q = self.quantization.as_ref()?;
        let decoded = hass_proto::open(&self.artifact).ok()?;
        report::datapath::from_schedule(&decoded.schedule, q.source.clone(), self.agreement_with_float)
    }

    /// The compiled model (pruned and thresholded, if asked) as standard ONNX: on the
    /// fixed-point datapath with QuantizeLinear/DequantizeLinear pairs at every format.
    pub fn to_onnx(&self) -> Result<Vec<u8>> {
        frontend::export::to_onnx(&self.graph, self.quantization.as_ref()).map_err(CompileError::Export)
    }
}

/// Everything a compile needs besides the model and the board.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    /// What shapes the design: allocator, widths, sparsity statistics, batch.
    pub design: design::DesignOptions,
    /// Weight pruning and activation thresholds, applied to the graph before anything else.
    pub pruning: sparsity::SparsityConfig,
    /// Calibration images (float32 NCHW, normalised as the model expects): when given, the
    /// sparsity statistics and the activation ranges are measured on them, and the sparsity
    /// search runs on them.
    pub calibration: Option<std::sync::Arc<hass_runtime::Tensor>>,
    /// Fixed point (the default: what the accelerator computes) or float32 (the reference).
    pub datapath: quantize::Datapath,
}

/// Compile `model` for `board`: import, passes, pruning and thresholds, calibration,
/// allocation, artifact.
pub fn compile(model: &std::path::Path, board: &board::Board, options: &CompileOptions) -> Result<Compiled> {
    compile_graph(load_model(model)?, board, options)
}

/// Search per-layer sparsity knobs on the calibration images of `options` ([`search`]), then
/// compile with the knobs it chose, calibrated on all the images.
pub fn compile_searched(
    model: &std::path::Path,
    board: &board::Board,
    options: &CompileOptions,
    search: &search::SearchOptions,
) -> Result<(Compiled, search::SearchResult)> {
    let graph = load_model(model)?;
    let images = options.calibration.clone().ok_or_else(|| {
        CompileError::Options("the sparsity search needs calibration images: give --calib X.npy".into())
    })?;
    if options.pruning.any() {
        return Err(CompileError::Options(
            "the sparsity search chooses the thresholds itself: drop the pruning and threshold options, or use --search none".into(),
        ));
    }
    // The dense model's activation ranges, on the images the search evaluates: its formats
    // at any widths come from them. The same float run gives the Gram matrices re-fits read.
    let (ranges, grams) = match options.datapath {
        quantize::Datapath::Fixed => {
            let grams = |plan: &_, trace: &_| {
                let _span = tracing::debug_span!("grams").entered();
                search.reconstruct.then(|| sparsity::reconstruct::grams_of_run(plan, trace, |_| true))
            };
            let (ranges, grams) = quantize::measure_ranges_and(&graph, board, Some(&images), grams)?;
            (Some(ranges), grams)
        }
        quantize::Datapath::Float => (None, None),
    };
    let mut result = search::search(&graph, board, &options.design, &images, search, ranges.as_ref(), grams)?;
    // The widths it chose (the ones it started from when it narrowed none).
    let design = design::DesignOptions { precision: result.config.widths(), ..options.design.clone() };
    let options = CompileOptions { pruning: result.config.clone(), design, ..options.clone() };
    let reused = Reused { grams: std::mem::take(&mut result.grams), ranges };
    let compiled = compile_graph_reusing(graph, board, &options, reused)?;
    // The report's figure: statistics on every calibration image, not the search's sample.
    result.summary.chosen.throughput_fps = compiled.design.throughput_fps();
    if let Some(p) = result.points.iter_mut().find(|p| p.chosen) {
        p.reported_throughput_fps = Some(compiled.design.throughput_fps());
    }
    Ok((compiled, result))
}

/// Compile a graph fresh from [`load_model`].
pub fn compile_graph(graph: ir::Graph, board: &board::Board, options: &CompileOptions) -> Result<Compiled> {
    compile_graph_reusing(graph, board, options, Reused::default())
}

/// What a search has worked out that the compile of its choice reads again.
#[derive(Default)]
struct Reused {
    /// Gram matrices of the dense graph on the calibration images, by layer.
    grams: std::collections::BTreeMap<String, sparsity::reconstruct::Gram>,
    /// The dense model's activation ranges on them, which the formats come from (else
    /// measured again).
    ranges: Option<quantize::MeasuredRanges>,
}

/// [`compile_graph`], re-fitting pruned layers from the Gram matrices `reused` has where
/// it has them (computed on the same dense graph and images, as a search does), and taking
/// its ranges where it has them.
fn compile_graph_reusing(
    mut graph: ir::Graph,
    board: &board::Board,
    options: &CompileOptions,
    reused: Reused,
) -> Result<Compiled> {
    if graph.layers().is_empty() {
        return Err(CompileError::InvalidModel {
            path: graph.name.clone().into(),
            reason: "it computes nothing once Identity and Dropout are removed (its output is its input): there is no stage to put on an accelerator".into(),
        });
    }
    let mut design_options = options.design.clone();
    let fixed = options.datapath == quantize::Datapath::Fixed;
    // The formats come from the ranges of the model as given, before pruning, thresholds
    // and re-fits: the ones a search evaluates its candidates at, so that the artifact of
    // the knobs it reports computes what it measured.
    let mut dense_ranges = reused.ranges;
    if options.pruning.any() {
        if fixed && dense_ranges.is_none() {
            design_options.precision.check(&graph)?;
            dense_ranges = Some(quantize::measure_ranges(&graph, board, options.calibration.as_deref())?);
        }
        let _span = tracing::info_span!("prune").entered();
        let dense = options.pruning.refits().then(|| graph.clone());
        sparsity::prune::apply(&mut graph, &options.pruning)?;
        if let Some(dense) = dense {
            let images = options.calibration.as_ref().ok_or_else(|| {
                CompileError::Options(
                    "reconstruct = true re-fits the weights of pruned or thresholded layers on calibration images: give --calib X.npy".into(),
                )
            })?;
            let widths = fixed.then_some(&design_options.precision);
            sparsity::reconstruct::apply(&mut graph, &dense, &options.pruning, board, images, widths, reused.grams)?;
        }
    }
    // The float model as compiled (on the calibration images when given): unpruned, the
    // formats' ranges, and what the datapath's agreement is measured against.
    if fixed {
        design_options.precision.check(&graph)?;
    }
    let ranges = match (fixed, &dense_ranges) {
        (true, None) => Some(quantize::measure_ranges(&graph, board, options.calibration.as_deref())?),
        _ => None,
    };
    let chosen_from = dense_ranges.as_ref().or(ranges.as_ref());
    let quantization = chosen_from.map(|r| quantize::formats(&graph, &design_options.precision, r));
    // The pruned model's first output on the calibration images, as it runs on the datapath.
    let mut output = None;
    if let Some(images) = &options.calibration {
        let (layers, out) = sparsity::statistics::measured(&graph, board, images, quantization.as_ref())?;
        output = Some(out);
        let source = format!("measured on {} calibration images", images.batch());
        design_options.sparsity = design::SparsitySource::Measured { layers, source };
    } else if options.pruning.any() && design_options.sparsity == design::SparsitySource::Dense {
        let layers = sparsity::statistics::from_weights(&graph);
        let source = "pruned weights only (no --calib): activation sparsity not measured".to_string();
        design_options.sparsity = design::SparsitySource::Measured { layers, source };
    }
    let design = design::design(&graph, board, &design_options)?;
    let _span = tracing::info_span!("backend").entered();
    let artifact = backend::emit(&graph, board, &design.layers, quantization.as_ref())?;
    // Both runs on the calibration images; where the formats came from the dense model's
    // ranges, the float model as compiled runs for its output alone (every value of a
    // ranges run is not needed: on ResNet-18's 64 images, 850 MB).
    let agreement_with_float = match (&output, options.calibration.as_deref()) {
        (Some(out), Some(images)) if fixed => {
            let measured;
            let float = match &ranges {
                Some(r) => r.float_output(),
                None => {
                    measured = quantize::float_output(&graph, board, images)?;
                    &measured
                }
            };
            Some(quantize::top1_agreement(float, out))
        }
        _ => None,
    };
    Ok(Compiled { graph, design, artifact, quantization, agreement_with_float })
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for unit tests: execute a small IR graph through the real backend and runtime.
    use crate::ir::Graph;

    /// A path under the repository's `testdata/`.
    pub fn testdata(rel: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata").join(rel)
    }

    /// The bundled Fashion-MNIST CNN on zcu102, with the first `images` training images.
    pub fn fmnist_cnn(images: usize) -> (Graph, crate::board::Board, hass_runtime::Tensor) {
        let graph = crate::load_model(&testdata("models/fmnist_cnn_op13.onnx")).unwrap();
        let board = crate::board::Board::resolve("zcu102").unwrap();
        let all = hass_runtime::npy::read_f32(&testdata("inputs/fmnist_train_500.npy")).unwrap();
        let data = all.data()[..images * 784].to_vec();
        (graph, board, hass_runtime::Tensor::new(vec![images, 1, 28, 28], data).unwrap())
    }

    /// Emit `graph`, load it in the runtime and run it on a deterministic input.
    pub fn run_graph(graph: &Graph, seed: u32) -> Vec<f32> {
        let board = crate::board::Board::resolve("u250").unwrap();
        let bytes = crate::backend::emit(graph, &board, &Default::default(), None).unwrap();
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
