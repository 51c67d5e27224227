//! PEFT's on-disk adapter format: `adapter_config.json` + `adapter_model.safetensors` with keys like
//! `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight` (A: (r, in)), `….lora_B.weight`
//! (B: (out, r)) and, for DoRA, `….lora_magnitude_vector` (out). Written to a temporary directory and
//! renamed, like every graft output.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;

use crate::config::LoraConfig;
use crate::AdapterError;

pub(crate) const PREFIX: &str = "base_model.model.";

pub fn key_a(module: &str) -> String {
    format!("{PREFIX}{module}.lora_A.weight")
}

pub fn key_b(module: &str) -> String {
    format!("{PREFIX}{module}.lora_B.weight")
}

/// A `modules_to_save` copy of module `module`'s weight.
pub fn key_saved(module: &str) -> String {
    format!("{PREFIX}{module}.weight")
}

pub fn key_magnitude(module: &str) -> String {
    format!("{PREFIX}{module}.lora_magnitude_vector")
}

/// Reads an adapter directory; errors name the file.
pub fn load(dir: &Path) -> Result<(LoraConfig, HashMap<String, Tensor>), AdapterError> {
    let file = |name: &str, e: &dyn std::fmt::Display| {
        AdapterError::File(dir.join(name).display().to_string(), e.to_string())
    };
    let cfg_path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| file("adapter_config.json", &e))?;
    let cfg: LoraConfig =
        serde_json::from_str(&text).map_err(|e| file("adapter_config.json", &e))?;
    cfg.validate()
        .map_err(|e| file("adapter_config.json", &e))?;
    let weights = dir.join("adapter_model.safetensors");
    if !weights.exists() {
        return Err(file(
            "adapter_model.safetensors",
            &"missing (adapter_model.bin pickles are not read)",
        ));
    }
    let tensors =
        candle_core::safetensors::load(&weights, &candle_core::Device::Cpu).map_err(|e| {
            file(
                "adapter_model.safetensors",
                &format!("corrupt safetensors: {e}"),
            )
        })?;
    // PEFT versions differ on whether the adapter name is in the key (`lora_A.default.weight`).
    let tensors = tensors
        .into_iter()
        .map(|(k, v)| (k.replace(".default.", "."), v))
        .collect();
    Ok((cfg, tensors))
}

/// Writes an adapter directory (must not exist).
pub fn save(
    dir: &Path,
    cfg: &LoraConfig,
    tensors: &HashMap<String, Tensor>,
) -> Result<(), AdapterError> {
    let io =
        |e: &dyn std::fmt::Display| AdapterError::File(dir.display().to_string(), e.to_string());
    if dir.exists() {
        return Err(io(&"already exists; refusing to overwrite"));
    }
    let staged = graft_models::fsio::StagedDir::new(dir).map_err(|e| io(&e))?;
    let tmp = staged.path();
    let json = serde_json::to_string_pretty(cfg).map_err(|e| io(&e))?;
    std::fs::write(tmp.join("adapter_config.json"), json).map_err(|e| io(&e))?;
    candle_core::safetensors::save(tensors, tmp.join("adapter_model.safetensors"))
        .map_err(|e| io(&e))?;
    staged.commit().map_err(|e| io(&e))
}
