//! The fixed-point datapath, bit for bit against its independent reference: every artifact
//! under `testdata/fixed/` (per-op fixtures at 16 and 8 bits, whose test inputs saturate,
//! and the bundled Fashion-MNIST models at 16 and 8 bits) runs on its input, and every
//! output equals the one `scripts/fixed_reference.py` computed from the ARCHITECTURE.md
//! contract (see `scripts/make_fixed_fixtures.py`). The same bytes come out with one
//! thread or two, and one image at a time or the whole batch.

use hass_runtime::plan::{Op, PoolKind};
use hass_runtime::{npy, Plan, Tensor};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fixed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/fixed")
}

/// Every `(NAME, BITS)` with its artifact, input and reference output.
fn cases() -> Vec<(String, PathBuf, PathBuf, PathBuf)> {
    let mut cases: Vec<_> = std::fs::read_dir(fixed_dir())
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let tag = path.file_name()?.to_str()?.strip_suffix(".hass")?.to_string();
            let name = tag.rsplit_once(".b")?.0.to_string();
            Some((
                tag.clone(),
                path.clone(),
                fixed_dir().join(format!("{name}.x.npy")),
                fixed_dir().join(format!("{tag}.y.npy")),
            ))
        })
        .collect();
    cases.sort();
    cases
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.data().iter().map(|v| v.to_bits()).collect()
}

fn run_with_threads(plan: &Plan, input: &Tensor, threads: usize) -> Tensor {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| hass_runtime::run(plan, input).unwrap().remove(0))
}

/// One image at a time, the outputs put back together.
fn run_image_by_image(plan: &Plan, input: &Tensor) -> Vec<u32> {
    let per_image = input.data().len() / input.batch();
    let mut shape = input.shape().to_vec();
    shape[0] = 1;
    input
        .data()
        .chunks_exact(per_image)
        .flat_map(|image| {
            bits(&hass_runtime::run(plan, &Tensor::new(shape.clone(), image.to_vec()).unwrap()).unwrap()[0])
        })
        .collect()
}

#[test]
fn every_fixture_matches_the_reference_bit_for_bit() {
    let cases = cases();
    assert!(cases.len() >= 18, "testdata/fixed/ holds {} artifacts; run scripts/make_fixed_fixtures.py", cases.len());
    for (tag, artifact, input, reference) in &cases {
        let plan = hass_runtime::load_file(artifact).unwrap();
        assert!(plan.input_format.is_some(), "{tag} is not a fixed-point artifact");
        let input = npy::read_f32(input).unwrap();
        let reference = npy::read_f32(reference).unwrap();
        let one_thread = run_with_threads(&plan, &input, 1);
        assert_eq!(one_thread.shape(), reference.shape(), "{tag}");
        let differing = bits(&one_thread).iter().zip(bits(&reference)).filter(|(a, b)| *a != b).count();
        assert_eq!(differing, 0, "{tag}: {differing} outputs differ from the reference");
        assert_eq!(bits(&run_with_threads(&plan, &input, 2)), bits(&one_thread), "{tag}: 2 threads");
        assert_eq!(run_image_by_image(&plan, &input), bits(&one_thread), "{tag}: batch 1");
    }
}

/// The fixtures cover what they claim: every layer kind and activation, grouped, dilated
/// and strided windows, thresholds, both widths; and their inputs saturate the input format.
#[test]
fn the_fixtures_cover_every_op_and_saturate() {
    let mut seen = BTreeSet::new();
    for (tag, artifact, input, _) in cases() {
        let plan = hass_runtime::load_file(&artifact).unwrap();
        let format = plan.input_format.unwrap();
        seen.insert(format!("{}-bit", format.bits));
        for layer in &plan.layers {
            let kind = match &layer.op {
                Op::Conv(c) => {
                    let features = [
                        (c.groups == c.c_in && c.groups > 1, "depthwise conv"),
                        (c.groups > 1 && c.groups < c.c_in, "grouped conv"),
                        (c.dilation != [1, 1], "dilated conv"),
                        (c.stride != [1, 1], "strided conv"),
                        (c.input_threshold.is_some(), "threshold"),
                    ];
                    seen.extend(features.iter().filter(|(has, _)| *has).map(|(_, name)| name.to_string()));
                    "conv".to_string()
                }
                Op::Pool(p) if p.kind == PoolKind::Max => "max pool".to_string(),
                Op::Pool(p) if p.count_include_pad => "average pool counting padding".to_string(),
                Op::Pool(_) => "average pool".to_string(),
                other => format!("{other:?}").split([' ', '(', '{']).next().unwrap().to_string(),
            };
            seen.insert(kind);
            if let Some(act) = layer.op.activation() {
                seen.insert(act.name().to_string());
            }
        }
        if !tag.starts_with("fmnist") {
            let x = npy::read_f32(&input).unwrap();
            let top = format.to_f32(format.max());
            assert!(x.data().iter().any(|v| v.abs() > top), "{tag}: no input saturates");
        }
    }
    for expected in [
        "16-bit",
        "8-bit",
        "conv",
        "depthwise conv",
        "grouped conv",
        "dilated conv",
        "strided conv",
        "Dense",
        "max pool",
        "average pool",
        "average pool counting padding",
        "GlobalAveragePool",
        "Eltwise",
        "ScaleShift",
        "Concat",
        "Reshape",
        "Activation",
        "relu",
        "clip",
        "sigmoid",
        "hardsigmoid",
        "hardswish",
        "threshold",
    ] {
        assert!(seen.contains(expected), "no fixture has {expected}; seen {seen:?}");
    }
}
