//! The sparsity search on a bundled model: deterministic, within its budget, honest about
//! what it measured, and reproducible from the knobs it reports.

mod common;

use common::{argmax, calibration, model};
use hassc::board::Board;
use hassc::search::{SearchOptions, SearchResult, Stop, Strategy};
use hassc::{CompileOptions, Compiled};

fn run(strategy: Strategy, budget: f64, labels: bool, images: usize) -> (Compiled, SearchResult) {
    let (calib, y) = calibration(images);
    let options = CompileOptions { calibration: Some(calib), ..Default::default() };
    let search = SearchOptions {
        strategy,
        objective: hassc::search::Objective::Throughput,
        max_accuracy_drop: budget,
        seed: 7,
        time_budget: None,
        max_evaluations: None,
        labels: labels.then_some(y),
        progress: false,
        reconstruct: strategy == Strategy::Hass,
        widths: strategy == Strategy::Hass,
    };
    let board = Board::resolve("zcu102").unwrap();
    hassc::compile_searched(&model("fmnist_cnn_op13"), &board, &options, &search).unwrap()
}

/// The report block as JSON without its one run-dependent figure.
fn summary_json(r: &SearchResult) -> serde_json::Value {
    let mut v = serde_json::to_value(&r.summary).unwrap();
    v.as_object_mut().unwrap().remove("wall_seconds");
    v
}

#[test]
fn same_inputs_and_seed_give_identical_artifacts_and_reports() {
    let (a, ra) = run(Strategy::Hass, 1.0, true, 200);
    let (b, rb) = run(Strategy::Hass, 1.0, true, 200);
    assert_eq!(a.artifact, b.artifact);
    assert_eq!(summary_json(&ra), summary_json(&rb));
    assert_eq!(serde_json::to_string(&ra.points).unwrap(), serde_json::to_string(&rb.points).unwrap());
}

#[test]
fn the_chosen_design_is_within_budget_faster_and_reproducible_from_its_knobs() {
    let (compiled, r) = run(Strategy::Hass, 1.0, true, 200);
    let s = &r.summary;
    assert!(s.chosen.top1 >= s.dense.top1 - 1.0 - 1e-9, "{:?}", s.chosen);
    assert!(s.free_zeros.throughput_fps > s.dense.throughput_fps, "the ReLU zeros alone pay");
    assert!(s.chosen.throughput_fps > s.free_zeros.throughput_fps, "the search found something: {s:?}");
    assert!(!r.config.layers.is_empty());
    assert_eq!(s.layers.len(), 3, "conv, conv and fully connected");
    assert!(s.layers.iter().all(|l| l.reason.contains("% of II")));
    // One chosen point, accepted and on or behind the front; the first is the dense model.
    assert_eq!(r.points.iter().filter(|p| p.chosen).count(), 1);
    assert!(r.points[0].accepted && r.points[0].accuracy_drop == 0.0);
    assert_eq!(r.points.len(), s.evaluations + 1);
    // The reported knobs, given back as a config (and its widths, as the CLI takes them),
    // compile to the very same artifact.
    let (calib, _) = calibration(200);
    let design = hassc::design::DesignOptions { precision: r.config.widths(), ..Default::default() };
    let options = CompileOptions { calibration: Some(calib), pruning: r.config.clone(), design, ..Default::default() };
    let board = Board::resolve("zcu102").unwrap();
    let again = hassc::compile(&model("fmnist_cnn_op13"), &board, &options).unwrap();
    assert_eq!(again.artifact, compiled.artifact);
    // And that artifact computes what the search measured: its top-1 on the calibration
    // images is the chosen design's.
    let (calib, labels) = calibration(200);
    let plan = hass_runtime::load_bytes(&compiled.artifact).unwrap();
    let out = hass_runtime::run(&plan, &calib).unwrap().remove(0);
    let classes = out.data().len() / 200;
    let right = out.data().chunks(classes).zip(&labels).filter(|(row, &y)| argmax(row) as i64 == y);
    assert_eq!(100.0 * right.count() as f64 / 200.0, s.chosen.top1, "{:?}", s.chosen);
}

/// Indices of the accepted designs after the first that measure as the dense model: each
/// later greedy start (`search/hass.rs`) begins there, and so does taking an earlier
/// start's design back.
fn restarts(r: &SearchResult) -> Vec<usize> {
    let p = &r.points;
    let dense = |q: &hassc::search::Point| {
        q.accepted && q.accuracy_drop == p[0].accuracy_drop && q.throughput_fps == p[0].throughput_fps
    };
    (1..p.len()).filter(|&i| dense(&p[i])).collect()
}

#[test]
fn on_a_small_model_the_greedy_starts_three_ways_and_keeps_the_best_end() {
    let (_, r) = run(Strategy::Hass, 1.0, true, 200);
    let p = &r.points;
    let restarts = restarts(&r);
    // Widths first, then without re-fits; a third return where an earlier start won.
    assert!(restarts.len() == 2 || restarts.len() == 3, "{restarts:?}");
    // Each run ends at the last design it accepted before the next begins; the answer is
    // the best of those, refined (which only ever improves it).
    let last_accepted = |range: std::ops::Range<usize>| range.rev().find(|&i| p[i].accepted).unwrap();
    let ends = [last_accepted(0..restarts[0]), last_accepted(restarts[0]..restarts[1])];
    let chosen = p.iter().position(|q| q.chosen).unwrap();
    let third_end = last_accepted(restarts[1]..restarts.get(2).copied().unwrap_or(chosen + 1));
    for end in ends.into_iter().chain([third_end]) {
        assert!(p[chosen].score >= p[end].score, "chosen {chosen} below the end at {end}: {p:?}");
    }
}

#[test]
fn a_zero_budget_loses_nothing_and_keeps_the_free_zeros() {
    let (_, r) = run(Strategy::Hass, 0.0, true, 200);
    let s = &r.summary;
    assert!(s.chosen.top1 >= s.dense.top1, "{:?} vs {:?}", s.chosen, s.dense);
    assert!(s.chosen.throughput_fps >= s.free_zeros.throughput_fps);
    assert!(s.free_zeros.throughput_fps > s.dense.throughput_fps);
    assert!(s.message.as_deref().is_some_and(|m| m.contains("lose no top-1")), "{:?}", s.message);
}

#[test]
fn without_labels_accuracy_is_agreement_with_the_dense_model() {
    let (_, r) = run(Strategy::Hass, 1.0, false, 100);
    assert!(r.summary.accuracy.contains("agreement"));
    assert_eq!(r.summary.free_zeros.top1, 100.0);
    assert!(r.summary.chosen.top1 >= 99.0);
}

#[test]
fn uniform_prunes_the_same_fraction_of_every_layer() {
    let (_, r) = run(Strategy::Uniform, 1.0, true, 100);
    let fractions: Vec<_> = r.config.layers.values().map(|k| k.weight_sparsity).collect();
    assert_eq!(fractions.len(), 3, "{:?}", r.config);
    assert!(fractions.iter().all(|f| f.is_some() && *f == fractions[0]), "{fractions:?}");
    assert!(r.config.layers.values().all(|k| k.reconstruct.is_none()), "the baseline only prunes");
    assert!(r.summary.chosen.top1 >= r.summary.dense.top1 - 1.0 - 1e-9);
    assert!(r.summary.chosen.throughput_fps > r.summary.free_zeros.throughput_fps);
}

#[test]
fn hass_re_fits_what_it_prunes() {
    let (_, r) = run(Strategy::Hass, 1.0, true, 200);
    let pruned: Vec<_> = r.config.layers.values().filter(|k| k.prunes()).collect();
    assert!(!pruned.is_empty());
    assert!(pruned.iter().all(|k| k.reconstruct == Some(true)), "{:?}", r.config);
}

#[test]
fn hass_narrows_operands_where_it_pays_and_reports_the_widths_it_chose() {
    let (compiled, r) = run(Strategy::Hass, 1.0, true, 200);
    let widths = r.config.widths();
    let narrowed: Vec<_> = r.summary.layers.iter().filter(|l| l.weight_bits < 16).collect();
    assert!(!narrowed.is_empty(), "{:?}", r.summary.layers);
    for l in &r.summary.layers {
        // The report's widths are the compiled design's.
        let stage = compiled.design.network.stages.iter().find(|s| s.name == l.name).unwrap();
        assert_eq!((l.weight_bits, l.input_bits), (stage.precision.weight_bits, stage.precision.activation_bits));
        assert_eq!(l.weight_bits, widths.of(&l.name).weight_bits);
        if l.weight_bits < 16 {
            assert!(l.reason.contains(&format!("{}-bit weights", l.weight_bits)), "{}", l.reason);
        }
    }
    // The artifact computes at those widths.
    let q = compiled.quantization.as_ref().unwrap();
    let node = compiled.graph.layers().into_iter().find(|&id| compiled.graph.node(id).name == narrowed[0].name);
    assert_eq!(q.layers[&node.unwrap()].weight_bits, narrowed[0].weight_bits);
}

#[test]
fn without_the_widths_knob_every_layer_keeps_its_width() {
    let (calib, y) = calibration(100);
    let options = CompileOptions { calibration: Some(calib), ..Default::default() };
    let search = SearchOptions {
        strategy: Strategy::Hass,
        objective: hassc::search::Objective::Throughput,
        max_accuracy_drop: 1.0,
        seed: 7,
        time_budget: None,
        max_evaluations: None,
        labels: Some(y),
        progress: false,
        reconstruct: false,
        widths: false,
    };
    let board = Board::resolve("zcu102").unwrap();
    let (compiled, r) = hassc::compile_searched(&model("fmnist_cnn_op13"), &board, &options, &search).unwrap();
    assert!(r.summary.layers.iter().all(|l| (l.weight_bits, l.input_bits) == (16, 16)), "{:?}", r.summary.layers);
    assert!(compiled.design.network.stages.iter().all(|s| s.precision == hassc::hw::Precision::default()));
    assert!(restarts(&r).is_empty(), "without widths, one start");
}

#[test]
fn global_greedy_sets_one_threshold_pair_for_every_layer() {
    let (_, r) = run(Strategy::GlobalGreedy, 1.0, true, 100);
    let layers = &r.summary.layers;
    let weights: Vec<_> = layers.iter().map(|l| l.weight_threshold).collect();
    assert!(weights.windows(2).all(|w| w[0] == w[1]), "{weights:?}");
    // The first layer reads the image, which is never thresholded.
    assert_eq!(layers[0].activation_threshold, None);
    assert_eq!(layers[1].activation_threshold, layers[2].activation_threshold);
    assert!(r.summary.chosen.top1 >= r.summary.dense.top1 - 1.0 - 1e-9);
}

#[test]
fn a_spent_time_budget_returns_the_best_design_so_far() {
    let (calib, y) = calibration(50);
    let options = CompileOptions { calibration: Some(calib), ..Default::default() };
    let search = SearchOptions {
        strategy: Strategy::Hass,
        objective: hassc::search::Objective::Throughput,
        max_accuracy_drop: 1.0,
        seed: 0,
        time_budget: Some(std::time::Duration::from_nanos(1)),
        max_evaluations: None,
        labels: Some(y),
        progress: false,
        reconstruct: true,
        widths: true,
    };
    let board = Board::resolve("zcu102").unwrap();
    let (compiled, r) = hassc::compile_searched(&model("fmnist_cnn_op13"), &board, &options, &search).unwrap();
    assert_eq!(r.summary.stopped, Stop::TimeBudget);
    assert!(r.config.layers.is_empty(), "nothing was accepted in no time");
    assert_eq!(compiled.design.throughput_fps(), r.summary.free_zeros.throughput_fps);
}

#[test]
fn an_evaluation_cap_stops_after_that_many_and_retraces_the_uncapped_search() {
    let (calib, y) = calibration(50);
    let options = CompileOptions { calibration: Some(calib), ..Default::default() };
    let board = Board::resolve("zcu102").unwrap();
    let searched = |strategy: Strategy, max_evaluations: Option<usize>| {
        let search = SearchOptions {
            strategy,
            objective: hassc::search::Objective::Throughput,
            max_accuracy_drop: 1.0,
            seed: 0,
            time_budget: None,
            max_evaluations,
            labels: Some(y.clone()),
            progress: false,
            reconstruct: true,
            widths: true,
        };
        hassc::compile_searched(&model("fmnist_cnn_op13"), &board, &options, &search).unwrap().1
    };
    let measured = |r: &SearchResult| -> Vec<(f64, f64)> {
        r.points.iter().map(|p| (p.accuracy_drop, p.throughput_fps)).collect()
    };
    let full = searched(Strategy::Hass, None);
    assert!(full.summary.evaluations > 6, "the cap must bind: {} evaluations", full.summary.evaluations);
    for (strategy, cap) in [(Strategy::Hass, 6), (Strategy::GlobalGreedy, 3)] {
        let capped = searched(strategy, Some(cap));
        assert_eq!(capped.summary.stopped, Stop::EvaluationBudget, "{strategy:?}");
        assert_eq!(capped.summary.evaluations, cap, "{strategy:?}");
        if strategy == Strategy::Hass {
            // The same evaluations as the uncapped search, up to the cap.
            assert_eq!(measured(&capped), measured(&full)[..=cap]);
            let chosen = capped.points.iter().find(|p| p.chosen).unwrap();
            assert!(chosen.accuracy_drop <= 1.0 + 1e-9);
        }
    }
}
