//! Test helpers shared by graft's crates: where fixtures live, closeness checks, real-model gating.

use std::path::PathBuf;

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
