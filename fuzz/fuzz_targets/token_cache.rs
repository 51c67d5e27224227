#![no_main]
//! A token cache: cache.json, offsets.bin and tokens.bin from one input (split at 0xff 0x00 0xff);
//! every document read when it opens.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = graft_fuzz::scratch().join("cache");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = graft_fuzz::parts(data, 3);
    for (name, bytes) in ["cache.json", "offsets.bin", "tokens.bin"].iter().zip(&p) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    if let Ok(c) = graft_data::token_cache::TokenCache::open(&dir) {
        for i in 0..c.len() {
            let _ = c.document(i);
        }
    }
});
