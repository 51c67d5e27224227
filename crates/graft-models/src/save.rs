//! Saving an HF directory: `config.json` + `model.safetensors` (+ tokenizer files when known), written
//! to a temporary directory beside the target and renamed into place, so a failed save leaves nothing
//! half-written.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use serde_json::Value;

use crate::{ModelError, Result};

/// Writes `tensors` under their names as `model.safetensors`, with `config_json`, into `out`.
/// `extra_files` are copied as (name, contents). `out` must not exist yet.
pub fn save_hf_dir(out: &Path, config_json: &Value, tensors: &HashMap<String, Tensor>, extra_files: &[(&str, String)]) -> Result<()> {
    if out.exists() {
        return Err(ModelError::file(out, "already exists; refusing to overwrite"));
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| ModelError::file(parent, e))?;
    let name = out.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "model".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        std::fs::create_dir_all(&tmp).map_err(|e| ModelError::file(&tmp, e))?;
        let config = serde_json::to_string_pretty(config_json).map_err(|e| ModelError::file(&tmp, e))?;
        std::fs::write(tmp.join("config.json"), config).map_err(|e| ModelError::file(&tmp, e))?;
        let weights = tmp.join("model.safetensors");
        candle_core::safetensors::save(tensors, &weights).map_err(|e| ModelError::file(&weights, e))?;
        for (file, contents) in extra_files {
            std::fs::write(tmp.join(file), contents).map_err(|e| ModelError::file(tmp.join(file), e))?;
        }
        std::fs::rename(&tmp, out).map_err(|e| ModelError::file(out, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}
