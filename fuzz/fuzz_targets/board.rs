//! Board files: TOML text through the parser and validation, and a design on what parses.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = hassc::board::Board::parse(text, "fuzz.toml");
});
