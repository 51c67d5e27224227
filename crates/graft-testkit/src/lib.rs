//! Test helpers shared by graft's crates: where fixtures live, closeness checks, real-model gating.

use std::path::{Path, PathBuf};

use candle_core::Tensor;

/// `tests/fixtures/<rel>` at the workspace root.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel)
}

/// Reads a JSON fixture.
pub fn read_json(rel: &str) -> serde_json::Value {
    let path = fixture(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Largest |a - b| over two tensors of one shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let d = (a.to_dtype(candle_core::DType::F32).unwrap()
        - b.to_dtype(candle_core::DType::F32).unwrap())
    .unwrap();
    d.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Asserts two tensors agree to `tol` (max absolute difference), naming what was compared.
#[macro_export]
macro_rules! assert_close {
    ($a:expr, $b:expr, $tol:expr, $($what:tt)+) => {{
        let diff = $crate::max_abs_diff(&$a, &$b);
        assert!(diff <= $tol, "{}: max |Δ| = {diff:e} > {:e}", format!($($what)+), $tol);
    }};
}

/// The folder named by `GRAFT_REAL_MODELS`, or `None` after printing why the test is skipped.
pub fn real_models(test: &str) -> Option<PathBuf> {
    match std::env::var_os("GRAFT_REAL_MODELS") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => {
            eprintln!("skipping {test}: set GRAFT_REAL_MODELS to a folder made by tools/fixtures/fetch_real_models.sh");
            None
        }
    }
}

/// Nested JSON numbers → a flat f32 vector plus its shape.
pub fn json_tensor(v: &serde_json::Value) -> (Vec<f32>, Vec<usize>) {
    fn walk(v: &serde_json::Value, depth: usize, shape: &mut Vec<usize>, out: &mut Vec<f32>) {
        match v {
            serde_json::Value::Array(items) => {
                if shape.len() == depth {
                    shape.push(items.len());
                }
                for item in items {
                    walk(item, depth + 1, shape, out);
                }
            }
            other => out.push(other.as_f64().expect("a number") as f32),
        }
    }
    let (mut shape, mut out) = (Vec::new(), Vec::new());
    walk(v, 0, &mut shape, &mut out);
    (out, shape)
}

/// Damaged copies of a valid input, for the "every parser errors, never panics" property
/// tests: truncations at lengths spread over the input, and `flips` copies with one to four
/// bytes changed (bit flips and the boundary values 0x00, 0xff, 0x7f, 0x80), from a fixed seed
/// so a failure names a reproducible case.
pub fn damaged(input: &[u8], flips: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let n = input.len();
    let mut cuts: Vec<usize> = (0..n.min(64)).collect();
    cuts.extend((1..64).map(|i| i * n / 64));
    cuts.sort_unstable();
    cuts.dedup();
    for c in cuts.into_iter().filter(|&c| c < n) {
        out.push((format!("truncated to {c} bytes"), input[..c].to_vec()));
    }
    let mut state = seed | 1;
    let mut next = || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    for case in 0..flips {
        if n == 0 {
            break;
        }
        let mut bytes = input.to_vec();
        let mut what = Vec::new();
        for _ in 0..1 + next() % 4 {
            let at = (next() % n as u64) as usize;
            let r = next();
            bytes[at] = match r % 3 {
                0 => bytes[at] ^ (1 << (r / 3 % 8)),
                1 => [0x00, 0xff, 0x7f, 0x80][(r / 3 % 4) as usize],
                _ => bytes[at].wrapping_add(1),
            };
            what.push(at);
        }
        out.push((format!("case {case}: bytes {what:?} changed"), bytes));
    }
    out
}

/// Runs `parse` on every damaged copy of `input` (written to a file named like `name`, in a
/// temporary folder) and fails, naming the case, if it panics. Errors are the expected outcome;
/// returns how many cases parsed without error (damage a format tolerates).
pub fn assert_no_panic<T, E>(
    name: &str,
    input: &[u8],
    flips: usize,
    parse: impl Fn(&Path) -> Result<T, E>,
) -> usize {
    let dir = std::env::temp_dir().join(format!("graft-no-panic-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let mut ok = 0;
    for (case, bytes) in damaged(input, flips, 0x9e37_79b9_7f4a_7c15) {
        std::fs::write(&path, &bytes).unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(&path)));
        match result {
            Ok(r) => ok += r.is_ok() as usize,
            Err(_) => {
                let _ = std::fs::remove_dir_all(&dir);
                panic!("{name}: {case}: the parser panicked");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    ok
}
