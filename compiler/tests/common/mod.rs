//! Helpers shared by the integration tests: where the bundled data is, slices of the bundled
//! image sets, running the `hassc` binary, and the shape of a clean failure.
#![allow(dead_code)] // each test file uses its own subset

use hass_runtime::Tensor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

/// A path under `testdata/`.
pub fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata").join(rel)
}

/// Index of the largest value of `row` (the first of equals): an image's top-1 class.
pub fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, v)| if *v > row[best] { i } else { best })
}

/// A bundled model by name (`fmnist_cnn_op13`).
pub fn model(name: &str) -> PathBuf {
    testdata(&format!("models/{name}.onnx"))
}

/// Images `start..start + n` of a bundled `.npy` image set (`inputs/fmnist_test_1000.npy`).
pub fn image_range(set: &str, start: usize, n: usize) -> Tensor {
    let all = hass_runtime::npy::read_f32(&testdata(set)).unwrap();
    let per_image: usize = all.shape()[1..].iter().product();
    let mut shape = all.shape().to_vec();
    shape[0] = n;
    Tensor::new(shape, all.data()[start * per_image..(start + n) * per_image].to_vec()).unwrap()
}

/// The first `n` bundled test images, shared as calibration images are.
pub fn test_images(n: usize) -> Arc<Tensor> {
    Arc::new(image_range("inputs/fmnist_test_1000.npy", 0, n))
}

/// The first `n` bundled training images (the calibration set) and their labels.
pub fn calibration(n: usize) -> (Arc<Tensor>, Vec<i64>) {
    let images = image_range("inputs/fmnist_train_500.npy", 0, n);
    let labels = hass_runtime::npy::read_labels(&testdata("inputs/fmnist_train_500_labels.npy")).unwrap();
    (Arc::new(images), labels[..n].to_vec())
}

/// Run the `hassc` binary.
pub fn hassc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hassc")).args(args).output().expect("hassc runs")
}

/// Assert a failure with a single-line message containing every `needle`, and no panic.
pub fn assert_fails(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "error should be one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "missing {n:?} in: {err}");
    }
}
