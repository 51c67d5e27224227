//! The supported families, selected by `model_type` (or, failing that, `architectures`), each a
//! file in this folder with its HF config mirror. Adding a decoder family = its file, its `mod`
//! line and its `FAMILIES` line here, and its fixture in the tests.

use std::path::Path;

use serde_json::Value;

use crate::config::{
    parse_family, DecoderConfig, MAX_HEADS, MAX_HEAD_DIM, MAX_HIDDEN, MAX_INTERMEDIATE, MAX_LAYERS,
    MAX_VOCAB,
};
use crate::{ModelError, Result};

pub mod gemma;
pub mod gemma2;
pub mod gemma3;
pub mod llama;
pub mod mistral;
pub mod olmo2;
pub mod qwen2;

pub struct Family {
    /// HF `model_type`.
    pub model_type: &'static str,
    /// HF `architectures` entry.
    pub architecture: &'static str,
    /// `general.architecture` in GGUF files.
    pub gguf_arch: &'static str,
    pub parse: fn(&Path, &Value) -> Result<DecoderConfig>,
}

macro_rules! family {
    ($model_type:literal, $arch:literal, $gguf:literal, $cfg:ty) => {
        Family {
            model_type: $model_type,
            architecture: $arch,
            gguf_arch: $gguf,
            parse: |path, json| {
                parse_family::<$cfg>(path, json)?
                    .to_decoder()
                    .map_err(|msg| ModelError::file(path, msg))
            },
        }
    };
}

pub const FAMILIES: &[Family] = &[
    family!("llama", "LlamaForCausalLM", "llama", llama::LlamaConfig),
    family!(
        "mistral",
        "MistralForCausalLM",
        "mistral",
        mistral::MistralConfig
    ),
    family!("qwen2", "Qwen2ForCausalLM", "qwen2", qwen2::Qwen2Config),
    family!("gemma", "GemmaForCausalLM", "gemma", gemma::GemmaConfig),
    family!(
        "gemma2",
        "Gemma2ForCausalLM",
        "gemma2",
        gemma2::Gemma2Config
    ),
    family!(
        "gemma3_text",
        "Gemma3ForCausalLM",
        "gemma3",
        gemma3::Gemma3TextConfig
    ),
    family!("olmo2", "Olmo2ForCausalLM", "olmo2", olmo2::Olmo2Config),
];

/// What a `config.json` describes: one of the decoder families, or an encoder-decoder (T5).
#[derive(Debug, Clone)]
pub(crate) enum Arch {
    Decoder(DecoderConfig),
    T5(crate::t5::T5Config),
}

/// `model_type`s (and `architectures`) of the encoder-decoder family.
const T5_TYPES: &[&str] = &[
    "t5",
    "mt5",
    "T5ForConditionalGeneration",
    "MT5ForConditionalGeneration",
];

/// Parses `config.json` into a decoder description or a T5 config.
pub(crate) fn arch_config(path: &Path, json: &Value) -> Result<Arch> {
    let model_type = json.get("model_type").and_then(Value::as_str);
    let arch = json
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(Value::as_str);
    if model_type.or(arch).is_some_and(|n| T5_TYPES.contains(&n)) {
        let cfg: crate::t5::T5Config = parse_family(path, json)?;
        cfg.ffn().map_err(|msg| ModelError::file(path, msg))?;
        crate::config::check_sizes(&[
            ("num_layers", cfg.num_layers, MAX_LAYERS),
            ("num_decoder_layers", cfg.decoder_layers(), MAX_LAYERS),
            ("num_heads", cfg.num_heads, MAX_HEADS),
            ("d_kv", cfg.d_kv, MAX_HEAD_DIM),
            ("d_model", cfg.d_model, MAX_HIDDEN),
            ("d_ff", cfg.d_ff, MAX_INTERMEDIATE),
            ("vocab_size", cfg.vocab_size, MAX_VOCAB),
            (
                "relative_attention_num_buckets",
                cfg.relative_attention_num_buckets,
                1 << 16,
            ),
        ])
        .map_err(|(field, msg)| ModelError::config(path, field, msg))?;
        if cfg.decoder_start_token_id.is_none() {
            return Err(ModelError::config(
                path,
                "decoder_start_token_id",
                "missing: T5 decoding starts from it (T5 checkpoints use 0, the pad id)",
            ));
        }
        return Ok(Arch::T5(cfg));
    }
    decoder_config(path, json).map(Arch::Decoder)
}

/// Whether a `config.json` describes an encoder-decoder (seq2seq) model; errors as [`arch_config`].
pub fn is_seq2seq(path: &Path, json: &Value) -> Result<bool> {
    Ok(matches!(arch_config(path, json)?, Arch::T5(_)))
}

/// The family a `config.json` names.
pub fn family_of(path: &Path, json: &Value) -> Result<&'static Family> {
    let model_type = json.get("model_type").and_then(Value::as_str);
    let arch = json
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(Value::as_str);
    FAMILIES
        .iter()
        .find(|f| Some(f.model_type) == model_type)
        .or_else(|| FAMILIES.iter().find(|f| Some(f.architecture) == arch))
        .ok_or_else(|| ModelError::UnknownArchitecture {
            path: path.to_path_buf(),
            name: model_type
                .or(arch)
                .unwrap_or("<none: no model_type or architectures>")
                .to_string(),
            supported: FAMILIES
                .iter()
                .map(|f| f.model_type)
                .chain(["t5", "mt5"])
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Parses `config.json` into the shared decoder description.
pub fn decoder_config(path: &Path, json: &Value) -> Result<DecoderConfig> {
    (family_of(path, json)?.parse)(path, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t5_sizes_of_zero_are_config_errors() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/models/t5/config.json");
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(is_seq2seq(&path, &json).unwrap());
        for field in ["num_layers", "num_decoder_layers", "num_heads", "d_kv"] {
            let mut bad = json.clone();
            bad[field] = serde_json::json!(0);
            let e = arch_config(&path, &bad).err().unwrap().to_string();
            assert!(e.contains(field) && e.contains("≥ 1"), "{field}: {e}");
            bad[field] = serde_json::json!(1u64 << 40);
            let e = arch_config(&path, &bad).err().unwrap().to_string();
            assert!(
                e.contains(field) && e.contains("past the limit"),
                "{field}: {e}"
            );
        }
    }

    #[test]
    fn decoder_sizes_past_their_limits_are_config_errors() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/models/llama/config.json");
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        decoder_config(&path, &json).unwrap();
        for field in [
            "num_hidden_layers",
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "head_dim",
        ] {
            let mut bad = json.clone();
            bad[field] = serde_json::json!(1u64 << 40);
            let e = arch_config(&path, &bad).err().unwrap().to_string();
            assert!(
                e.contains(field) && e.contains("past the limit"),
                "{field}: {e}"
            );
        }
    }
}
