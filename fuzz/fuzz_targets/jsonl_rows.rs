#![no_main]
//! JSONL rows, plain and as plain text paragraphs.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = graft_data::source::read_rows(&graft_fuzz::file("rows.jsonl", data));
    let _ = graft_data::source::read_rows(&graft_fuzz::file("rows.txt", data));
});
