//! `hass-run` as a user meets it, on the checked-in artifact of `fmnist_cnn_op13`:
//! outputs that match onnxruntime's golden file, and every damaged artifact or wrong input
//! giving a one-line error, a non-zero exit and no output file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata").join(rel)
}

fn artifact() -> PathBuf {
    testdata(&format!("artifacts/fmnist_cnn_op13.v{}.hass", hass_proto::FORMAT_VERSION))
}

fn hass_run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hass-run")).args(args).output().expect("hass-run runs")
}

fn assert_fails(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "error should be one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "missing {n:?} in: {err}");
    }
}

#[test]
fn runs_the_artifact_and_matches_onnxruntime() {
    // Version 3 holds the 16-bit fixed-point datapath: within 0.1 % of the float outputs.
    matches_onnxruntime(&artifact(), 1e-3);
}

#[test]
fn every_older_format_version_still_runs() {
    for version in hass_proto::MIN_FORMAT_VERSION..hass_proto::FORMAT_VERSION {
        // Versions 1 and 2 are float32: onnxruntime's outputs up to rounding.
        matches_onnxruntime(&testdata(&format!("artifacts/fmnist_cnn_op13.v{version}.hass")), 1e-4);
    }
}

/// Outputs within `tolerance` of the largest golden output.
fn matches_onnxruntime(artifact: &Path, tolerance: f32) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("y.npy");
    let images = testdata("inputs/fmnist_test_1000.npy");
    let res =
        hass_run(&[artifact.to_str().unwrap(), "--input", images.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let ours = hass_runtime::npy::read_f32(&out).unwrap();
    let golden = hass_runtime::npy::read_f32(&testdata("golden/fmnist_cnn_op13.npy")).unwrap();
    assert_eq!(ours.shape(), golden.shape());
    let scale = golden.data().iter().fold(0f32, |m, v| m.max(v.abs()));
    for (a, b) in ours.data().iter().zip(golden.data()) {
        assert!((a - b).abs() <= tolerance * scale, "{a} vs {b}");
    }
}

#[test]
fn every_flipped_byte_is_a_clean_error_without_output() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(artifact()).unwrap();
    let images = testdata("inputs/fmnist_test_1000.npy");
    let out = dir.path().join("y.npy");
    // The header, the section table, the schedule and the weights.
    for at in [0, 9, 20, 60, 100, bytes.len() / 2, bytes.len() - 1] {
        let mut corrupt = bytes.clone();
        corrupt[at] ^= 0x10;
        let path = dir.path().join("corrupt.hass");
        std::fs::write(&path, &corrupt).unwrap();
        let res =
            hass_run(&[path.to_str().unwrap(), "--input", images.to_str().unwrap(), "--output", out.to_str().unwrap()]);
        assert_fails(&res, &["corrupt.hass"]);
        assert!(!out.exists(), "output written for a corrupt artifact (byte {at})");
    }
}

#[test]
fn truncated_artifact_and_unknown_version_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(artifact()).unwrap();
    let cut = dir.path().join("cut.hass");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    assert_fails(&hass_run(&[cut.to_str().unwrap(), "--bench", "1"]), &["truncated"]);
    let mut newer = bytes.clone();
    newer[8..12].copy_from_slice(&99u32.to_le_bytes());
    let path = dir.path().join("v99.hass");
    std::fs::write(&path, &newer).unwrap();
    assert_fails(&hass_run(&[path.to_str().unwrap(), "--bench", "1"]), &["version 99"]);
}

#[test]
fn wrong_input_shape_names_the_expected_one() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x.npy");
    let wrong = hass_runtime::Tensor::new(vec![2, 3, 28, 28], vec![0.0; 2 * 3 * 28 * 28]).unwrap();
    std::fs::write(&x, hass_runtime::npy::to_npy_bytes(&wrong)).unwrap();
    let out = dir.path().join("y.npy");
    let res =
        hass_run(&[artifact().to_str().unwrap(), "--input", x.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert_fails(&res, &["[N, 1, 28, 28]", "[2, 3, 28, 28]"]);
    assert!(!out.exists());
}

#[test]
fn labels_are_not_images() {
    let res = hass_run(&[
        artifact().to_str().unwrap(),
        "--input",
        testdata("inputs/fmnist_test_1000_labels.npy").to_str().unwrap(),
    ]);
    assert_fails(&res, &["float32"]);
}

#[test]
fn profile_shows_where_the_time_goes_per_layer_kind() {
    let res = hass_run(&[artifact().to_str().unwrap(), "--bench", "1", "--profile"]);
    assert!(res.status.success());
    let text = String::from_utf8(res.stdout).unwrap();
    assert!(text.contains("time per layer kind, batch 8") && text.contains("ms/image"), "{text}");
    let at_one = hass_run(&[artifact().to_str().unwrap(), "--bench", "1", "--profile", "--profile-batch", "1"]);
    assert!(String::from_utf8(at_one.stdout).unwrap().contains("time per layer kind, batch 1"));
    // One row per kind, the layers of all kinds adding up to the plan's.
    let plan = hass_runtime::load_file(&artifact()).unwrap();
    let rows: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("kind")).skip(1).collect();
    let counted: usize = rows
        .iter()
        .filter(|l| !l.starts_with("total"))
        .map(|l| l.split_whitespace().rev().nth(2).unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(counted, plan.layers.len(), "{text}");
    assert!(rows.iter().any(|l| l.starts_with("conv 3x3")), "{text}");
    // Profiling times the benchmark's runs: it needs --bench.
    assert!(!hass_run(&[artifact().to_str().unwrap(), "--profile"]).status.success());
    let zero = hass_run(&[artifact().to_str().unwrap(), "--bench", "1", "--profile", "--profile-batch", "0"]);
    assert!(!zero.status.success());
}

#[test]
fn bench_prints_batch_1_and_batch_8() {
    let res = hass_run(&[artifact().to_str().unwrap(), "--bench", "2"]);
    assert!(res.status.success());
    let text = String::from_utf8(res.stdout).unwrap();
    assert!(text.contains("batch 1: ") && text.contains("batch 8: ") && text.contains("images/s"), "{text}");
}

#[test]
fn simulate_prints_stage_cycles_and_writes_them_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("sim.json");
    let images = testdata("inputs/fmnist_test_1000.npy");
    let res = hass_run(&[
        artifact().to_str().unwrap(),
        "--input",
        images.to_str().unwrap(),
        "--simulate",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let text = String::from_utf8(res.stdout).unwrap();
    assert!(text.contains("simulated on 1000 image(s)") && text.contains("<- bottleneck"), "{text}");
    let json = std::fs::read_to_string(&report).unwrap();
    for key in ["\"ii_cycles\"", "\"throughput_fps\"", "\"layers\"", "\"/c1/c1.0/Conv\"", "\"cycles\""] {
        assert!(json.contains(key), "{key} missing from {json}");
    }
    // --report without --simulate is refused by the argument parser.
    let res = hass_run(&[
        artifact().to_str().unwrap(),
        "--input",
        images.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(!res.status.success());
}

#[test]
fn outputs_never_replace_the_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("x.npy");
    std::fs::copy(testdata("inputs/fmnist_test_1000.npy"), &input).unwrap();
    let artifact_copy = dir.path().join("m.hass");
    std::fs::copy(artifact(), &artifact_copy).unwrap();
    let (a, x) = (artifact_copy.to_str().unwrap(), input.to_str().unwrap());
    assert_fails(&hass_run(&[a, "--input", x, "--output", x]), &["is also an input", "x.npy"]);
    assert_fails(&hass_run(&[a, "--input", x, "--output", a]), &["is also an input", "m.hass"]);
    assert_fails(&hass_run(&[a, "--input", x, "--simulate", "--report", x]), &["is also an input"]);
    let out = dir.path().join("y.npy");
    let (y, y_again) = (out.to_str().unwrap(), format!("{}/./y.npy", dir.path().display()));
    let both = hass_run(&[a, "--input", x, "--output", y, "--simulate", "--report", &y_again]);
    assert_fails(&both, &["--output and --report name the same file"]);
    assert!(String::from_utf8_lossy(&both.stdout).is_empty(), "refused before running");
    assert_eq!(std::fs::read(&input).unwrap(), std::fs::read(testdata("inputs/fmnist_test_1000.npy")).unwrap());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "nothing else written");
}

/// A reader that stops reading (`hass-run ... | head -1`) is no error of hass-run's: the
/// output file is still written and the exit is clean, without a panic.
#[test]
fn a_closed_standard_output_still_writes_the_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("y.npy");
    let images = testdata("inputs/fmnist_test_1000.npy");
    // A pipe whose reading end is closed before hass-run starts: its first line fails.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let res = Command::new(env!("CARGO_BIN_EXE_hass-run"))
        .args([artifact().to_str().unwrap(), "--input", images.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .stdout(writer)
        .output()
        .expect("hass-run runs");
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{err}");
    assert!(err.is_empty(), "{err}");
    assert_eq!(hass_runtime::npy::read_f32(&out).unwrap().shape(), [1000, 10]);
}
