//! The checked-in artifact of the current format version,
//! `testdata/artifacts/fmnist_cnn_op13.v{FORMAT_VERSION}.hass`, is what this compiler writes
//! for `fmnist_cnn_op13.onnx` on zcu102, byte for byte. The runtime's tests load it (and
//! every older version's file), so a format or lowering change shows up here first. After a reviewed,
//! intended change, bless it with `UPDATE_EXPECT=1 cargo test --release --test artifact_snapshot`
//! (and bump FORMAT_VERSION with a new file name if old runtimes would misread it).

mod common;

#[test]
fn compiler_reproduces_the_checked_in_artifact() {
    let data = common::testdata("");
    let board = hassc::board::Board::resolve("zcu102").unwrap();
    let bytes =
        hassc::compile(&data.join("models/fmnist_cnn_op13.onnx"), &board, &Default::default()).unwrap().artifact;
    let snapshot = data.join(format!("artifacts/fmnist_cnn_op13.v{}.hass", hass_proto::FORMAT_VERSION));
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&snapshot, &bytes).unwrap();
    }
    let expected = std::fs::read(&snapshot).unwrap_or_default();
    assert!(
        bytes == expected,
        "{} differs from the compiler's output; bless with UPDATE_EXPECT=1 if intended",
        snapshot.display()
    );
}
