//! `manifest.json`: what a run read (paths, sizes, sha256), its seed, resolved recipe, and the graft
//! version and commit — enough to say later exactly what produced a model.

use std::io::Read;
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::TrainError;

pub fn sha256(path: &Path) -> Result<String, TrainError> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| TrainError::Io(format!("{}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| TrainError::Io(format!("{}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Every file under `paths` (folders are walked, sorted) with its size and sha256.
pub fn inputs(paths: &[&Path]) -> Result<Vec<Value>, TrainError> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut inner: Vec<_> = std::fs::read_dir(p)
                .map_err(|e| TrainError::Io(format!("{}: {e}", p.display())))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            inner.sort();
            files.extend(inner);
        } else {
            files.push(p.to_path_buf());
        }
    }
    files
        .iter()
        .map(|f| {
            let bytes = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
            Ok(json!({"path": f, "bytes": bytes, "sha256": sha256(f)?}))
        })
        .collect()
}

pub fn write(
    path: &Path,
    recipe: &Value,
    inputs: Vec<Value>,
    seed: u64,
    extra: Value,
) -> Result<(), TrainError> {
    let manifest = json!({
        "graft_version": env!("CARGO_PKG_VERSION"),
        "git_commit": env!("GRAFT_GIT_COMMIT"),
        "created_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "seed": seed,
        "recipe": recipe,
        "inputs": inputs,
        "run": extra,
    });
    let text =
        serde_json::to_string_pretty(&manifest).map_err(|e| TrainError::Io(e.to_string()))?;
    graft_models::fsio::write_file(path, text.as_bytes())
        .map_err(|e| TrainError::Io(format!("{}: {e}", path.display())))
}
