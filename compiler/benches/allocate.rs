//! Allocation speed: the exact-II and greedy allocators on torchvision ResNet-50 and
//! ResNet-18 for u250 (the network model is built once, outside the timing).
//!
//! Needs `testdata/torchvision/` (`python3 scripts/export_torchvision.py`); models that are
//! not there are skipped with a message. Run: `cargo bench --bench allocate`.

use criterion::{criterion_group, criterion_main, Criterion};
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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
