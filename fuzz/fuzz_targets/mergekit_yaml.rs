#![no_main]
//! A mergekit YAML config.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    graft_fuzz::panic_hook();
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = graft_merge::mergekit_yaml::MergeConfig::parse(text);
    }
});
