//! The model being trained: built from its source as variables (full fine-tuning) or as a
//! frozen base with adapter variables, and read batch by batch. The objectives consume the
//! next-token log-probs of each batch's token stream — for T5 the decoder stream
//! `[decoder_start] + targets`, conditioned on the batch's encoder input — so every objective
//! (lm, sft, preference, KTO) runs on any architecture without knowing which.
//!
//! Shapes: ids (B, T) → logits (B, T, V), log-probs (B, T−1); T5 also takes encoder ids and mask
//! (B, S).

use std::path::Path;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use graft_models::{LanguageModel, Model, ModelInput, ModelSource};

use crate::batch::Batch;
use crate::TrainError;

impl Batch {
    /// The batch as the model reads it.
    pub fn input(&self) -> ModelInput<'_> {
        ModelInput {
            ids: &self.ids,
            encoder: self.encoder.as_ref().map(|(i, m)| (i, m)),
            packed: self.packed.as_ref().map(|(p, s)| (p, s)),
        }
    }
}

/// Logits (B, T, V) at every position of the batch.
pub fn batch_logits(model: &Model, batch: &Batch, train: bool) -> Result<Tensor> {
    graft_adapters::mtlora::set_row_tasks(&batch.tasks);
    model.logits(&batch.input(), train)
}

/// Next-token log-probs (B, T−1) of the batch and, when asked, the log-partitions.
pub fn batch_logps(
    model: &Model,
    batch: &Batch,
    train: bool,
    want_lse: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    graft_adapters::mtlora::set_row_tasks(&batch.tasks);
    model.token_logps(&batch.input(), train, want_lse)
}

/// The model to train: all weights as variables, or a frozen base with adapter variables.
pub fn build_model(
    source: &ModelSource,
    dropout: Option<f64>,
    varmap: &VarMap,
    adapter: Option<&graft_adapters::LoraConfig>,
    dtype: DType,
    seed: u64,
) -> std::result::Result<Model, TrainError> {
    let device = Device::Cpu;
    let vars = adapter
        .is_none()
        .then(|| VarBuilder::from_varmap(varmap, dtype, &device));
    let mut model = source.build_for_training(dropout, dtype, &device, vars)?;
    match adapter {
        None => set_vars(varmap, &source.tensors(DType::F32)?, &source.path)?,
        Some(cfg) if cfg.peft_type == graft_adapters::PeftType::Lst => {
            // Random side blocks for now; lst_init::init_side prunes the backbone into them once
            // the training rows are read.
            let backbone = model.as_decoder_mut().ok_or_else(|| {
                TrainError::Recipe(
                    "adapter.kind = \"lst\": supported for decoder-only models".into(),
                )
            })?;
            let spec = cfg.side_spec(&backbone.cfg).map_err(TrainError::Recipe)?;
            let ladder = graft_adapters::lst::Ladder::new(&backbone.cfg, spec, varmap, seed, None)
                .map_err(|e| TrainError::Recipe(format!("adapter: {e}")))?;
            backbone.side = Some(std::sync::Arc::new(ladder));
        }
        Some(cfg) => {
            graft_adapters::init_trainable(&mut model, cfg, varmap, seed)
                .map_err(|e| TrainError::Recipe(format!("adapter: {e}")))?;
        }
    }
    Ok(model)
}

pub fn set_vars(
    varmap: &VarMap,
    tensors: &std::collections::HashMap<String, Tensor>,
    from: &Path,
) -> std::result::Result<(), TrainError> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| TrainError::Io("varmap poisoned".into()))?;
    for (name, var) in vars.iter() {
        let t = tensors
            .get(name)
            .ok_or_else(|| TrainError::Io(format!("{}: no tensor `{name}`", from.display())))?;
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(())
}
