//! graft-adapters: parameter-efficient adapters that wrap graft-models' linear layers — LoRA,
//! rsLoRA, DoRA, SLTrain, MTLoRA, Ladder Side-Tuning — read and written in PEFT's format, attachable for inference (`--adapter DIR`),
//! trainable (`[adapter]` in a recipe), and mergeable into the base weights.

pub mod config;
pub mod dora;
pub mod dropout_down;
pub mod lora;
pub mod lora_op;
pub mod lst;
pub mod lst_prune;
pub mod mtlora;
pub mod peft_format;
pub mod saved;
pub mod sltrain;

pub use config::{LoraConfig, PeftType};
pub use lora::{attach, init_trainable, merged_weights};

#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("{0}: {1}")]
    File(String, String),
    #[error("adapter config: {0}")]
    Config(String),
    #[error("adapter tensor `{0}`: {1}")]
    Tensor(String, String),
    #[error("{0}")]
    Candle(#[from] candle_core::Error),
}

/// Loads the PEFT adapter in `dir` onto `model`; returns the wrapped module names.
pub fn load_onto(
    model: &mut dyn graft_models::layers::linear::Linears,
    dir: &std::path::Path,
) -> Result<Vec<String>, AdapterError> {
    let (cfg, tensors) = peft_format::load(dir)?;
    attach(model, &cfg, &tensors)
        .map_err(|e| AdapterError::File(dir.display().to_string(), e.to_string()))
}

/// Loads the adapter in `dir` onto a model: a PEFT adapter, or (decoder-only models) an LST side
/// network, which then computes the decoder's hidden states. Returns the wrapped module names
/// (none for LST).
pub fn load_onto_model(
    model: &mut graft_models::Model,
    dir: &std::path::Path,
) -> Result<Vec<String>, AdapterError> {
    let (cfg, tensors) = peft_format::load(dir)?;
    let at = |e: String| AdapterError::File(dir.display().to_string(), e);
    if cfg.peft_type == config::PeftType::Lst {
        let decoder = model
            .as_decoder_mut()
            .ok_or_else(|| at("an LST side network needs a decoder-only model".into()))?;
        let spec = cfg.side_spec(&decoder.cfg).map_err(at)?;
        let ladder = lst::Ladder::load(&decoder.cfg, spec, &tensors).map_err(at)?;
        decoder.side = Some(std::sync::Arc::new(ladder));
        return Ok(Vec::new());
    }
    attach(model, &cfg, &tensors).map_err(|e| at(e.to_string()))
}
