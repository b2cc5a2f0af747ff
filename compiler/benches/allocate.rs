//! Allocation speed: the exact-II and greedy allocators on torchvision ResNet-50 and
//! ResNet-18 for u250 (the network model is built once, outside the timing); and the exact
//! allocator with every stage's choices already costed, as the search calls it thousands of
//! times (its rounds over the whole bracket, and below the best as a search's estimates run
//! them), on the bundled Fashion-MNIST models for zcu102 and on ResNet-18 for u250.
//!
//! Needs `testdata/torchvision/` (`python3 scripts/export_torchvision.py`); models that are
//! not there are skipped with a message. Run: `cargo bench --bench allocate`.

use criterion::{criterion_group, criterion_main, Criterion};
use hassc::alloc::exact::{self, choices_of_stage};
use hassc::alloc::joint::Links;
use hassc::alloc::{allocate, Allocator};
use hassc::board::Board;
use hassc::design::{network, DesignOptions};
use hassc::hw::Budget;
use std::path::Path;

fn bench(c: &mut Criterion) {
    let budget = Budget::of(&Board::resolve("u250").unwrap());
    for model in ["resnet50", "resnet18"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../testdata/torchvision/{model}_op13.onnx"));
        if !path.exists() {
            eprintln!("skipping {model}: {} is missing (run scripts/export_torchvision.py)", path.display());
            continue;
        }
        let graph = hassc::load_model(&path).unwrap();
        let net = network(&graph, &DesignOptions::default()).unwrap();
        for allocator in [Allocator::Exact, Allocator::Greedy] {
            c.bench_function(&format!("allocate {model} u250 {}", allocator.name()), |b| {
                b.iter(|| allocate(&net, &budget, allocator).unwrap())
            });
        }
    }
}

fn reallocate(c: &mut Criterion) {
    for (model, board) in [("fmnist_mobilenet", "zcu102"), ("fmnist_resnet", "zcu102"), ("resnet18", "u250")] {
        let budget = Budget::of(&Board::resolve(board).unwrap());
        let dir = if model == "resnet18" { "torchvision" } else { "models" };
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../testdata/{dir}/{model}_op13.onnx"));
        if !path.exists() {
            eprintln!("skipping {model}: {} is missing (run scripts/export_torchvision.py)", path.display());
            continue;
        }
        let graph = hassc::load_model(&path).unwrap();
        let net = network(&graph, &DesignOptions::default()).unwrap();
        let choices: Vec<_> = (0..net.stages.len()).map(|i| choices_of_stage(&net, i, &budget)).collect();
        for (rounds, name) in [(exact::Rounds::Whole, ""), (exact::Rounds::BelowBest, " below-best")] {
            c.bench_function(&format!("reallocate {model} {board}{name}"), |b| {
                b.iter(|| exact::allocate_with(&net, &budget, choices.clone(), rounds).unwrap())
            });
        }
    }
}

/// The joint picks' inner step ([`Links::pick`], most of a search's allocation time) on
/// ResNet-18 for u250: one pick at each of 16 intervals from the fastest every stage can
/// reach to eight times that.
fn joint_picks(c: &mut Criterion) {
    let budget = Budget::of(&Board::resolve("u250").unwrap());
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/torchvision/resnet18_op13.onnx");
    if !path.exists() {
        eprintln!("skipping joint picks: {} is missing (run scripts/export_torchvision.py)", path.display());
        return;
    }
    let graph = hassc::load_model(&path).unwrap();
    let net = network(&graph, &DesignOptions::default()).unwrap();
    let choices: Vec<_> = (0..net.stages.len()).map(|i| choices_of_stage(&net, i, &budget)).collect();
    let links = Links::new(&net, &choices);
    let floor = choices.iter().map(|c| c.min_cycles()).fold(1.0, f64::max);
    let intervals: Vec<f64> = (0..16).map(|k| floor * 8f64.powf(k as f64 / 15.0)).collect();
    c.bench_function("joint picks resnet18 u250 (16 intervals)", |b| {
        b.iter(|| intervals.iter().filter(|&&ii| links.pick(&choices, ii, 1e-9).is_some()).count())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench, reallocate, joint_picks
}
criterion_main!(benches);
