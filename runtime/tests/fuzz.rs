//! Bounded, seeded fuzzing of the runtime's readers of untrusted input, run on every
//! `cargo test`: the artifact loader (raw byte mutants, and mutants of the schedule whose
//! checksums are recomputed so they reach the loader's validation behind the container),
//! then execution and the cycle simulation of whatever loads, and the `.npy` readers.
//! Each case must give a value or an error, never a panic. A crash found here becomes a
//! regression case under `testdata/fuzz/`.
//!
//! Longer campaigns: `HASS_FUZZ_SCALE=100 HASS_FUZZ_SEED=7 cargo test --release --test fuzz`
//! runs a hundred times the cases from another seed.

use hass_proto as pb;
use prost::Message;
use rand::{Rng, RngExt, SeedableRng};
use std::path::{Path, PathBuf};

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata").join(rel)
}

/// Cases per run: `base` times `HASS_FUZZ_SCALE` (1 by default).
fn cases(base: usize) -> usize {
    base * std::env::var("HASS_FUZZ_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1)
}

/// The generator for stream `stream`, seeded by `HASS_FUZZ_SEED` (0 by default).
fn rng(stream: u64) -> rand::rngs::Xoshiro256PlusPlus {
    let seed: u64 = std::env::var("HASS_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed.wrapping_mul(1000) + stream)
}

/// `bytes` with a few random edits: flipped bits, overwritten bytes, a cut, an insertion.
fn mutate(bytes: &[u8], rng: &mut impl Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        if out.is_empty() {
            out.push(rng.random());
            continue;
        }
        let at = rng.random_range(0..out.len());
        match rng.random_range(0..5) {
            0 => out[at] ^= 1 << rng.random_range(0..8),
            1 => out[at] = rng.random(),
            2 => out[at] = *[0u8, 1, 0x7f, 0x80, 0xff].get(rng.random_range(0..5)).unwrap_or(&0),
            3 => out.truncate(at),
            _ => {
                let b: u8 = rng.random();
                out.insert(at, b);
            }
        }
    }
    out
}

/// Load `bytes`; if it loads, run it and simulate it on a small input: no panic either way.
fn exercise(bytes: &[u8]) {
    let Ok(plan) = hass_runtime::load_bytes(bytes) else { return };
    let per_image: usize = plan.input_shape.iter().product();
    if per_image > 1 << 20 {
        return; // valid but too large to run here
    }
    let mut shape = vec![2];
    shape.extend_from_slice(&plan.input_shape);
    let input = hass_runtime::Tensor::new(shape, (0..2 * per_image).map(|i| (i % 7) as f32 - 3.0).collect()).unwrap();
    let _ = hass_runtime::run(&plan, &input);
    let _ = hass_runtime::sim::simulate(&plan, &input);
}

#[test]
fn artifact_mutants_never_panic() {
    let original = std::fs::read(testdata("artifacts/fmnist_cnn_op13.v2.hass")).unwrap();
    let (schedule, weights) = pb::decode(&original).unwrap();
    let schedule_bytes = schedule.encode_to_vec();
    let mut rng = rng(11);
    for _ in 0..cases(300) {
        exercise(&mutate(&original, &mut rng));
    }
    // Behind the checksums: mutate the schedule or the weights, then re-wrap them validly.
    for i in 0..cases(600) {
        let (s, w) = if i % 3 == 0 {
            (schedule.clone(), mutate(weights, &mut rng))
        } else {
            match pb::Schedule::decode(mutate(&schedule_bytes, &mut rng).as_slice()) {
                Ok(s) => (s, weights.to_vec()),
                Err(_) => continue,
            }
        };
        exercise(&pb::encode(&s, &w));
    }
}

#[test]
fn npy_mutants_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.npy");
    let images = std::fs::read(testdata("inputs/fmnist_test_1000.npy")).unwrap();
    let labels = std::fs::read(testdata("inputs/fmnist_test_1000_labels.npy")).unwrap();
    let mut rng = rng(12);
    for i in 0..cases(400) {
        // Mutate the header region mostly: that is where the parser's decisions are.
        let source = if i % 2 == 0 { &images[..256] } else { &labels[..256] };
        let mut bytes = mutate(source, &mut rng);
        bytes.extend_from_slice(&(if i % 2 == 0 { &images } else { &labels })[256..]);
        std::fs::write(&path, &bytes).unwrap();
        let _ = hass_runtime::npy::read_f32(&path);
        let _ = hass_runtime::npy::read_labels(&path);
    }
}
