#![no_main]
//! An lm-eval task file and its JSONL data (split at 0xff 0x00 0xff); a task that opens is
//! prepared (Jinja templates rendered for every document).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = graft_fuzz::parts(data, 2);
    graft_fuzz::file("test.jsonl", p[1]);
    let task = graft_fuzz::file("task.yaml", p[0]);
    if let Ok(t) = graft_eval::Task::open(&task, None, Some(50)) {
        let _ = t.prepare();
    }
});
