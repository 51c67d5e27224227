#![no_main]
//! Parquet rows (TRL / datasets files).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = graft_data::source::read_rows(&graft_fuzz::file("rows.parquet", data));
});
