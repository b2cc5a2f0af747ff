//! `.npy` bytes through both readers (they read files, as the binaries do).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("x.npy");
    std::fs::write(&path, data).expect("writable");
    let _ = hass_runtime::npy::read_f32(&path);
    let _ = hass_runtime::npy::read_labels(&path);
});
