//! ONNX bytes through the whole compile: import, passes, allocation, backend.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut graph) = hassc::frontend::import_bytes(data, None, "fuzz") else { return };
    if hassc::passes::run_pipeline(&mut graph).is_err() {
        return;
    }
    let board = hassc::board::Board::resolve("zcu102").expect("a built-in board");
    let _ = hassc::compile_graph(graph, &board, &Default::default());
});
