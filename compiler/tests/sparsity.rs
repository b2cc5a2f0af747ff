//! Pruning, activation thresholds and calibration on the bundled models: the knobs do what
//! they say, the measured statistics are well formed, and they reach the hardware model.

mod common;

use common::{test_images as images, testdata};
use hassc::board::Board;
use hassc::hw::Precision;
use hassc::report::{report, DesignReport};
use hassc::sparsity::{LayerKnobs, SparsityConfig};
use hassc::CompileOptions;
use std::sync::Arc;

fn compile(model: &str, options: CompileOptions) -> (DesignReport, hassc::Compiled) {
    let board = Board::resolve("zcu102").unwrap();
    let c = hassc::compile(&common::model(model), &board, &options).unwrap();
    (report(model, &board, &c.design), c)
}

fn knobs(weight_sparsity: f64, activation_threshold: Option<f32>) -> SparsityConfig {
    SparsityConfig {
        global: LayerKnobs { weight_sparsity: Some(weight_sparsity), activation_threshold, ..LayerKnobs::default() },
        ..SparsityConfig::default()
    }
}

#[test]
fn weight_sparsity_prunes_that_fraction_of_every_layer() {
    let (r, _) = compile("fmnist_resnet_op13", CompileOptions { pruning: knobs(0.7, None), ..Default::default() });
    assert!(r.sparsity_source.contains("no --calib"), "{}", r.sparsity_source);
    for l in r.layers.iter().filter(|l| l.product_sparsity.is_some()) {
        let w = l.weight_sparsity.unwrap();
        assert!((w - 0.7).abs() < 0.01, "{}: {w}", l.name);
        assert!(l.activation_sparsity.is_none());
    }
}

#[test]
fn calibration_measures_well_formed_statistics_that_raise_throughput() {
    let (dense, _) = compile("fmnist_mobilenet_op13", CompileOptions::default());
    let options = CompileOptions { pruning: knobs(0.7, None), calibration: Some(images(64)), ..Default::default() };
    let (r, c) = compile("fmnist_mobilenet_op13", options);
    assert_eq!(r.sparsity_source, "measured on 64 calibration images");
    assert!(r.throughput_fps > 1.5 * dense.throughput_fps, "{} vs {}", r.throughput_fps, dense.throughput_fps);
    for (stage, sp) in c.design.network.stages.iter().zip(&c.design.network.sparsity) {
        let Some(sp) = sp else { continue };
        assert_eq!(
            sp.histograms.len(),
            match &stage.kind {
                hassc::hw::stage::StageKind::Conv { c_in, .. } => *c_in,
                _ => unreachable!(),
            }
        );
        for h in sp.histograms.iter() {
            assert_eq!(h.len(), stage.window_size() + 1);
            assert!((h.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{}: {h:?}", stage.name);
        }
        // A product is zero if its weight is: never sparser in weights than in products.
        assert!(sp.product + 1e-9 >= sp.weight.unwrap(), "{}", stage.name);
    }
}

#[test]
fn activation_thresholds_zero_more_inputs_but_not_the_image() {
    let run = |t: Option<f32>| {
        let options = CompileOptions { pruning: knobs(0.0, t), calibration: Some(images(16)), ..Default::default() };
        compile("fmnist_cnn_op13", options).0
    };
    let (plain, thresholded) = (run(None), run(Some(0.5)));
    let act = |r: &DesignReport, i: usize| r.layers[i].activation_sparsity.unwrap();
    // Layer 0 reads the image: untouched. Layer 2 reads a ReLU output: more zeros.
    assert_eq!(act(&plain, 0), act(&thresholded, 0));
    assert!(act(&thresholded, 2) > act(&plain, 2) + 0.05, "{} vs {}", act(&thresholded, 2), act(&plain, 2));
}

#[test]
fn config_file_layers_must_exist_and_override_the_flags() {
    let graph = hassc::load_model(&testdata("models/fmnist_cnn_op13.onnx")).unwrap();
    let first = hassc::report::summarize(&graph).layers[0].name.clone();
    let text = format!("weight_sparsity = 0.5\n[layers.\"{first}\"]\nweight_sparsity = 0.9\n");
    let config = SparsityConfig::parse(&text, false).unwrap();
    let (r, _) = compile("fmnist_cnn_op13", CompileOptions { pruning: config, ..Default::default() });
    assert!((r.layers[0].weight_sparsity.unwrap() - 0.9).abs() < 0.01);
    assert!((r.layers[2].weight_sparsity.unwrap() - 0.5).abs() < 0.01);

    let bad = SparsityConfig::parse("[layers.\"nope\"]\nweight_sparsity = 0.5\n", false).unwrap();
    let board = Board::resolve("zcu102").unwrap();
    let options = CompileOptions { pruning: bad, ..Default::default() };
    let err = hassc::compile(&testdata("models/fmnist_cnn_op13.onnx"), &board, &options).err().unwrap().to_string();
    assert!(err.contains("\"nope\"") && err.contains(&first), "{err}");
    assert!(SparsityConfig::parse("weight_sparsity = 0.5\nunknown = 1\n", false).is_err());
}

/// Images `start..start + n` of the bundled test set.
fn image_range(start: usize, n: usize) -> hass_runtime::Tensor {
    common::image_range("inputs/fmnist_test_1000.npy", start, n)
}

/// The cost model against the cycle simulation. Only zero-skipping stages are an
/// independent check: there the simulation counts what the hardware would do on each window
/// of images the calibration never saw; dense and element-wise stages share one formula.
#[test]
fn modelled_cycles_agree_with_the_simulation_on_held_out_images() {
    for model in ["fmnist_cnn_op13", "fmnist_resnet_op13", "fmnist_mobilenet_op18"] {
        // Calibrate on one set of images, simulate on another.
        let options = CompileOptions {
            pruning: knobs(0.7, None),
            calibration: Some(Arc::new(image_range(0, 64))),
            ..Default::default()
        };
        let (r, c) = compile(model, options);
        let plan = hass_runtime::load_bytes(&c.artifact).unwrap();
        let sim = hass_runtime::sim::simulate(&plan, &image_range(500, 64)).unwrap();
        assert_eq!(sim.stages.len(), r.layers.len());
        let mut sparse_checked = 0;
        for ((layer, stage), planned) in r.layers.iter().zip(&sim.stages).zip(&plan.layers) {
            assert_eq!(layer.name, stage.name);
            if !planned.hardware.sparse {
                // Dense and element-wise stages: the simulation uses the cost model's own
                // formula (there is nothing data-dependent to count), so this only checks
                // that both read the same folding from the artifact. Code against itself.
                assert!((layer.cycles - stage.cycles).abs() <= 1e-6 * layer.cycles.max(1.0), "{}", layer.name);
            } else if layer.cycles >= 0.1 * r.ii_cycles {
                // Zero-skipping stages: the simulation counts, window by window on images
                // the statistics never saw, the cycles each (stream, lane) pair spends; the
                // model predicts them from calibration histograms. The real check.
                let err = (layer.cycles / stage.cycles - 1.0).abs();
                assert!(err <= 0.05, "{model} {}: model {} vs simulated {}", layer.name, layer.cycles, stage.cycles);
                sparse_checked += 1;
            }
        }
        assert!(sparse_checked > 0, "{model}: no zero-skipping stage near the interval to check");
        let err = (r.throughput_fps / sim.throughput_fps - 1.0).abs();
        assert!(err <= 0.03, "{model}: model {} vs simulated {} images/s", r.throughput_fps, sim.throughput_fps);
        // The sparse design really is faster than dense in simulation too.
        let (dense, _) = compile(model, CompileOptions::default());
        assert!(sim.throughput_fps > dense.throughput_fps, "{model}");
    }
}

#[test]
fn zero_skipping_kernels_compute_what_the_dense_ones_do() {
    for model in ["fmnist_cnn_op13", "fmnist_resnet_op13", "fmnist_mobilenet_op18"] {
        let options = CompileOptions { pruning: knobs(0.9, Some(0.05)), ..Default::default() };
        let (_, c) = compile(model, options);
        let sparse_plan = hass_runtime::load_bytes(&c.artifact).unwrap();
        let mut dense_plan = sparse_plan.clone();
        let mut sparse_layers = 0;
        for layer in &mut dense_plan.layers {
            match &mut layer.op {
                hass_runtime::plan::Op::Conv(conv) => sparse_layers += conv.sparse_weight.take().is_some() as usize,
                hass_runtime::plan::Op::Dense(d) => sparse_layers += d.sparse_weight.take().is_some() as usize,
                _ => {}
            }
        }
        assert!(sparse_layers > 0, "{model}: no layer took the sparse path");
        let x = images(50);
        let a = hass_runtime::run(&sparse_plan, &x).unwrap().remove(0);
        let b = hass_runtime::run(&dense_plan, &x).unwrap().remove(0);
        let scale = b.data().iter().fold(0f32, |m, v| m.max(v.abs()));
        for (p, q) in a.data().iter().zip(b.data()) {
            assert!((p - q).abs() <= 1e-5 * scale, "{model}: {p} vs {q}");
        }
    }
}

#[test]
fn a_pruned_model_takes_its_formats_from_the_model_before_pruning() {
    // What a search evaluates (formats from the dense model's ranges) is what the artifact
    // of its knobs computes, however much pruning and thresholds move the ranges.
    let calib = images(100);
    let mut pruning = knobs(0.6, Some(0.3));
    pruning.global.reconstruct = Some(true);
    let design = hassc::design::DesignOptions {
        precision: hassc::design::Widths::uniform(Precision { weight_bits: 8, activation_bits: 6 }),
        ..Default::default()
    };
    let options = CompileOptions { pruning, calibration: Some(calib.clone()), design, ..Default::default() };
    let (_, c) = compile("fmnist_resnet_op13", options.clone());
    let board = Board::resolve("zcu102").unwrap();
    let dense = hassc::load_model(&common::model("fmnist_resnet_op13")).unwrap();
    let ranges = hassc::quantize::measure_ranges(&dense, &board, Some(&calib)).unwrap();
    let expected = hassc::quantize::formats(&dense, &options.design.precision, &ranges);
    let q = c.quantization.unwrap();
    assert_eq!(q.input, expected.input);
    for (id, formats) in &expected.layers {
        assert_eq!(q.layers[id], *formats, "{}", dense.node(*id).name);
    }
}
