//! What a model reference in the YAML may name: an HF folder or a PEFT adapter folder (read
//! tensor by tensor, io.rs), a `.gguf` file (dequantized by graft-models, held in memory), or
//! mergekit's `BASE+ADAPTER` — the LoRA merged into its base as PEFT's `merge_and_unload` does
//! (graft-adapters, parity-tested there), held in memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use graft_models::ModelSource;

use crate::io::ModelFiles;

fn values(
    tensors: HashMap<String, Tensor>,
) -> Result<HashMap<String, (Vec<f32>, Vec<usize>)>, String> {
    tensors
        .into_iter()
        .map(|(k, t)| {
            let shape = t.dims().to_vec();
            let v = t
                .to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| format!("`{k}`: {e}"))?;
            Ok((k, (v, shape)))
        })
        .collect()
}

fn in_memory(
    path: &Path,
    source: &ModelSource,
    tensors: HashMap<String, Tensor>,
) -> Result<ModelFiles, String> {
    let files = source
        .tokenizer_files()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(n, c)| (n.to_string(), c))
        .collect();
    Ok(ModelFiles::in_memory(
        path,
        source.config_json_for(DType::F32),
        values(tensors)?,
        files,
    ))
}

pub fn open_model(spec: &str, resolve: &dyn Fn(&str) -> PathBuf) -> Result<ModelFiles, String> {
    let path = resolve(spec);
    if !path.exists() {
        if let Some((base, adapter)) = spec.rsplit_once('+') {
            return merged_lora(&resolve(base), &resolve(adapter));
        }
        return Err(format!(
            "{}: not found (graft merge reads local models)",
            path.display()
        ));
    }
    if path.is_file() && path.extension().is_some_and(|e| e == "gguf") {
        let source =
            ModelSource::open(&path, DType::F32, &Device::Cpu).map_err(|e| e.to_string())?;
        let tensors = source.tensors(DType::F32).map_err(|e| e.to_string())?;
        return in_memory(&path, &source, tensors);
    }
    ModelFiles::open(&path)
}

fn merged_lora(base: &Path, adapter: &Path) -> Result<ModelFiles, String> {
    let source = ModelSource::open(base, DType::F32, &Device::Cpu).map_err(|e| e.to_string())?;
    let mut model = source
        .build(DType::F32, &Device::Cpu)
        .map_err(|e| e.to_string())?;
    graft_adapters::load_onto(&mut model, adapter).map_err(|e| e.to_string())?;
    let (cfg, _) = graft_adapters::peft_format::load(adapter).map_err(|e| e.to_string())?;
    let saved = cfg.modules_to_save()?;
    let mut tensors = source.tensors(DType::F32).map_err(|e| e.to_string())?;
    for (name, w) in
        graft_adapters::merged_weights(&mut model, &saved).map_err(|e| e.to_string())?
    {
        tensors.insert(name, w);
    }
    in_memory(base, &source, tensors)
}
