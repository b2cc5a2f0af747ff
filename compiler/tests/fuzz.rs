//! Bounded, seeded fuzzing of the compiler's readers of untrusted input, run on every
//! `cargo test`: the ONNX frontend (raw byte mutants, and structural mutants of a real
//! model: attributes, dimensions, op types, wiring), followed through the passes, the
//! allocator and the backend, and the board parser (text mutants of a board file). Each
//! case must give a value or an error, never a panic.
//!
//! Longer campaigns: `HASS_FUZZ_SCALE=100 HASS_FUZZ_SEED=7 cargo test --release --test fuzz`.

mod common;

use hassc::board::Board;
use prost::Message;
use rand::{Rng, RngExt, SeedableRng};
use tract_onnx::pb;

/// Cases per run: `base` times `HASS_FUZZ_SCALE` (1 by default).
fn cases(base: usize) -> usize {
    base * std::env::var("HASS_FUZZ_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1)
}

/// The generator for stream `stream`, seeded by `HASS_FUZZ_SEED` (0 by default).
fn rng(stream: u64) -> rand::rngs::Xoshiro256PlusPlus {
    let seed: u64 = std::env::var("HASS_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed.wrapping_mul(1000) + stream)
}

/// Values that find edge cases in integer fields.
const INTERESTING: [i64; 12] = [0, 1, -1, 2, 3, 7, 64, 1 << 31, 1 << 40, 1 << 62, i64::MAX, i64::MIN];

fn interesting(rng: &mut impl Rng) -> i64 {
    if rng.random_bool(0.7) {
        INTERESTING[rng.random_range(0..INTERESTING.len())]
    } else {
        rng.random_range(-5..50)
    }
}

/// Compile `bytes` as far as it goes: import, passes, design, artifact.
fn compile(bytes: &[u8], board: &Board) {
    let Ok(mut graph) = hassc::frontend::import_bytes(bytes, None, "fuzz") else { return };
    if hassc::passes::run_pipeline(&mut graph).is_err() {
        return;
    }
    let _ = hassc::compile_graph(graph, board, &Default::default());
}

/// One structural edit of a model.
fn mutate_model(model: &mut pb::ModelProto, rng: &mut impl Rng) {
    let graph = model.graph.as_mut().expect("the seed model has a graph");
    let ops = ["Conv", "Relu", "MaxPool", "Gemm", "Flatten", "Add", "Mul", "Reshape", "BatchNormalization", "Concat"];
    let n = graph.node.len();
    match rng.random_range(0..7) {
        0 if n > 0 => {
            let node = &mut graph.node[rng.random_range(0..n)];
            if let Some(a) = node.attribute.first_mut() {
                a.i = interesting(rng);
                a.ints.iter_mut().for_each(|v| *v = interesting(rng));
                a.f = [0.0, -1.0, f32::NAN, f32::INFINITY, 1e30][rng.random_range(0..5)];
            }
        }
        1 if !graph.initializer.is_empty() => {
            let k = rng.random_range(0..graph.initializer.len());
            let t = &mut graph.initializer[k];
            if let Some(d) = t.dims.first_mut() {
                *d = interesting(rng);
            }
        }
        2 => {
            use pb::tensor_shape_proto::dimension::Value;
            let dims = graph.input.first_mut().and_then(|i| i.r#type.as_mut()).and_then(|t| match t.value.as_mut() {
                Some(pb::type_proto::Value::TensorType(t)) => t.shape.as_mut(),
                _ => None,
            });
            if let Some(shape) = dims {
                let count = shape.dim.len();
                if count > 0 {
                    shape.dim[rng.random_range(0..count)].value = Some(Value::DimValue(interesting(rng)));
                }
            }
        }
        3 if n > 0 => graph.node[rng.random_range(0..n)].op_type = ops[rng.random_range(0..ops.len())].into(),
        4 if n > 1 => {
            let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
            let input = graph.node[a].input.first().cloned().unwrap_or_default();
            if let Some(slot) = graph.node[b].input.first_mut() {
                *slot = input;
            }
        }
        5 if n > 0 => {
            graph.node.remove(rng.random_range(0..n));
        }
        _ => model.opset_import.iter_mut().for_each(|o| o.version = rng.random_range(1..25)),
    }
}

#[test]
fn onnx_mutants_never_panic() {
    let board = Board::resolve("zcu102").unwrap();
    let mut rng = rng(21);
    for name in ["fmnist_cnn_op13", "fmnist_mobilenet_op18"] {
        let bytes = std::fs::read(common::model(name)).unwrap();
        for _ in 0..cases(60) {
            let mut mutant = bytes.clone();
            for _ in 0..rng.random_range(1..=3) {
                let at = rng.random_range(0..mutant.len());
                mutant[at] = rng.random();
            }
            compile(&mutant, &board);
        }
        let seed = pb::ModelProto::decode(bytes.as_slice()).unwrap();
        for _ in 0..cases(120) {
            let mut model = seed.clone();
            for _ in 0..rng.random_range(1..=3) {
                mutate_model(&mut model, &mut rng);
            }
            compile(&model.encode_to_vec(), &board);
        }
    }
}

#[test]
fn board_mutants_never_panic() {
    let text = std::fs::read_to_string(common::testdata("boards/zcu102.toml")).unwrap();
    let mut rng = rng(22);
    let pieces =
        ["0", "-1", "1e308", "nan", "inf", "\"x\"", "[", "=", "\n", "1e-300", "18446744073709551616", "[limits]"];
    for _ in 0..cases(500) {
        let mut mutant = text.clone();
        for _ in 0..rng.random_range(1..=3) {
            let mut at = rng.random_range(0..=mutant.len());
            while !mutant.is_char_boundary(at) {
                at -= 1;
            }
            let end = (at + rng.random_range(0..8)).min(mutant.len());
            let end = (end..=mutant.len()).find(|&e| mutant.is_char_boundary(e)).unwrap_or(mutant.len());
            mutant.replace_range(at..end, pieces[rng.random_range(0..pieces.len())]);
        }
        if let Ok(board) = Board::parse(&mutant, "fuzz.toml") {
            // A board that parses must also take a design (or refuse it) cleanly.
            let graph = hassc::load_model(&common::model("fmnist_cnn_op13")).unwrap();
            let _ = hassc::compile_graph(graph, &board, &Default::default());
        }
    }
}
