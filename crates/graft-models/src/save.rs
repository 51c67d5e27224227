//! Saving an HF directory: `config.json` + `model.safetensors` (+ tokenizer files when known), written
//! to a temporary directory beside the target and renamed into place, so a failed save leaves nothing
//! half-written.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use serde_json::Value;

use crate::{ModelError, Result};

/// Writes `tensors` under their names as `model.safetensors`, with `config_json`, into `out`.
/// `extra_files` are copied as (name, contents). An existing `out` is an error unless `replace`
/// (`--force`), and is then replaced only once the new folder is complete.
pub fn save_hf_dir(
    out: &Path,
    config_json: &Value,
    tensors: &HashMap<String, Tensor>,
    extra_files: &[(&str, String)],
    replace: bool,
) -> Result<()> {
    if out.exists() && !replace {
        return Err(ModelError::file(
            out,
            "already exists; refusing to overwrite",
        ));
    }
    let staged = crate::fsio::StagedDir::new(out).map_err(|e| ModelError::file(out, e))?;
    let tmp = staged.path();
    let config = serde_json::to_string_pretty(config_json).map_err(|e| ModelError::file(tmp, e))?;
    std::fs::write(tmp.join("config.json"), config).map_err(|e| ModelError::file(tmp, e))?;
    let weights = tmp.join("model.safetensors");
    candle_core::safetensors::save(tensors, &weights).map_err(|e| ModelError::file(&weights, e))?;
    for (file, contents) in extra_files {
        std::fs::write(tmp.join(file), contents)
            .map_err(|e| ModelError::file(tmp.join(file), e))?;
    }
    match replace {
        true => staged.commit_replacing(),
        false => staged.commit(),
    }
    .map_err(|e| ModelError::file(out, e))
}

/// Writes a folder of tokenizer files only (`graft vocab train`), staged then renamed into
/// place; an existing `out` is replaced only with `replace`.
pub fn save_tokenizer_dir(out: &Path, files: &[(&str, String)], replace: bool) -> Result<()> {
    if out.exists() && !replace {
        return Err(ModelError::file(
            out,
            "already exists; refusing to overwrite",
        ));
    }
    let staged = crate::fsio::StagedDir::new(out).map_err(|e| ModelError::file(out, e))?;
    for (file, contents) in files {
        let p = staged.path().join(file);
        std::fs::write(&p, contents).map_err(|e| ModelError::file(&p, e))?;
    }
    match replace {
        true => staged.commit_replacing(),
        false => staged.commit(),
    }
    .map_err(|e| ModelError::file(out, e))
}

impl crate::ModelSource {
    /// All weights under their HF keys, in `dtype`.
    pub fn tensors(&self, dtype: candle_core::DType) -> Result<HashMap<String, Tensor>> {
        let convert = |name: &str, t: Tensor| {
            t.to_dtype(dtype)
                .map_err(|e| ModelError::tensor(&self.path, name, e))
        };
        let mut out = HashMap::new();
        match &self.weights {
            crate::load::Weights::Tensors(map) => {
                for (name, t) in map {
                    let t = match self.quantized.get(name) {
                        Some(q) => q
                            .dequantize(&candle_core::Device::Cpu)
                            .map_err(|e| ModelError::tensor(&self.path, name, e))?,
                        None => t.clone(),
                    };
                    out.insert(name.clone(), convert(name, t)?);
                }
            }
            crate::load::Weights::Safetensors(files) => {
                for file in files {
                    let map = candle_core::safetensors::load(file, &candle_core::Device::Cpu)
                        .map_err(|e| ModelError::file(file, format!("corrupt safetensors: {e}")))?;
                    for (name, t) in map {
                        let t = convert(&name, t)?;
                        out.insert(name, t);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The tokenizer and generation files an HF directory of this model needs: copied verbatim from
    /// an HF source directory, or written from the tokenizer rebuilt out of a GGUF file.
    pub fn tokenizer_files(&self) -> Result<Vec<(&'static str, String)>> {
        const NAMES: [&str; 5] = [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "chat_template.jinja",
            "generation_config.json",
        ];
        if self.path.is_dir() {
            let mut out = Vec::new();
            for name in NAMES {
                let p = self.path.join(name);
                if p.exists() {
                    out.push((
                        name,
                        std::fs::read_to_string(&p).map_err(|e| ModelError::file(&p, e))?,
                    ));
                }
            }
            return Ok(out);
        }
        let mut out = Vec::new();
        if let Some(tok) = &self.tokenizer {
            let json = tok
                .inner
                .to_string(true)
                .map_err(|e| ModelError::file(&tok.source, e))?;
            out.push(("tokenizer.json", json));
            let mut cfg = serde_json::Map::new();
            cfg.insert("tokenizer_class".into(), "PreTrainedTokenizerFast".into());
            if let Some(b) = &tok.bos_token {
                cfg.insert("bos_token".into(), b.clone().into());
            }
            if let Some(e) = &tok.eos_token {
                cfg.insert("eos_token".into(), e.clone().into());
            }
            if let Some(t) = &tok.chat_template {
                cfg.insert("chat_template".into(), t.clone().into());
            }
            out.push((
                "tokenizer_config.json",
                serde_json::to_string_pretty(&cfg).unwrap_or_default(),
            ));
        }
        let mut gen = serde_json::Map::new();
        if let Some(b) = self.generation.bos_token_id {
            gen.insert("bos_token_id".into(), b.into());
        }
        match self.generation.eos_token_ids.as_slice() {
            [] => {}
            [one] => {
                gen.insert("eos_token_id".into(), (*one).into());
            }
            many => {
                gen.insert("eos_token_id".into(), many.to_vec().into());
            }
        }
        out.push((
            "generation_config.json",
            serde_json::to_string_pretty(&gen).unwrap_or_default(),
        ));
        Ok(out)
    }

    /// `config.json` with `dtype` set to the dtype weights are written in.
    pub fn config_json_for(&self, dtype: candle_core::DType) -> Value {
        let mut config = self.config_json.clone();
        if let Some(obj) = config.as_object_mut() {
            let name = match dtype {
                candle_core::DType::BF16 => "bfloat16",
                candle_core::DType::F16 => "float16",
                _ => "float32",
            };
            obj.insert("dtype".into(), name.into());
        }
        config
    }

    /// Writes this model as an HF directory: config, weights in `dtype`, tokenizer files
    /// (replacing an existing `out` only with `replace`).
    pub fn save_hf(&self, out: &Path, dtype: candle_core::DType, replace: bool) -> Result<()> {
        let extra = self.tokenizer_files()?;
        let extra: Vec<(&str, String)> = extra.into_iter().collect();
        save_hf_dir(
            out,
            &self.config_json_for(dtype),
            &self.tensors(dtype)?,
            &extra,
            replace,
        )
    }
}
