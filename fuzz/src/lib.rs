//! Shared by the fuzz targets: most of graft's readers take paths, so an input is written to a
//! per-process scratch folder (in /dev/shm when there is one) first.

use std::path::{Path, PathBuf};

/// A panic that graft catches and turns into an error (`graft_models::guard::catch`, around
/// dependencies known to panic on bad input) is not a finding: stay quiet then. Any other panic
/// aborts, as libFuzzer's default hook does, so it is reported as a crash.
pub fn panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if graft_models::guard::catching() {
                return;
            }
            default(info);
            std::process::abort();
        }));
    });
}

/// The scratch folder of this process.
pub fn scratch() -> PathBuf {
    panic_hook();
    let base = match Path::new("/dev/shm").is_dir() {
        true => PathBuf::from("/dev/shm"),
        false => std::env::temp_dir(),
    };
    let dir = base.join(format!("graft-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// Writes `data` to `name` in the scratch folder and returns its path.
pub fn file(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, data).expect("scratch file");
    path
}

/// Splits an input into `n` parts at the separator bytes 0xff 0x00 0xff (the last part takes the
/// rest), so one input can fill several files.
pub fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() + 1 < n {
        match rest.windows(3).position(|w| w == [0xff, 0x00, 0xff]) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + 3..];
            }
            None => break,
        }
    }
    out.push(rest);
    out.resize(n, &[]);
    out
}
