//! Training objectives. An objective sees per-token log-probs and masks, never the model, so a new
//! loss never changes the trainer. Each is one file plus one line in `registry.rs`.
//!
//! Shapes: B rows, T target positions (sequence length − 1).
//! `logps` (B, T): log p(token t+1 | tokens ..=t) under the policy; `mask` (B, T) f32, 1 where the
//! token is in the loss; `ref_logps` (B, T) the same under the frozen reference; `lse` (B, T) the
//! log-partition log Σ exp(logits) at each position (for z-loss).

pub mod dpo;
pub mod kto;
pub mod lipo;
pub mod lm;
pub mod minor_dpo;
pub mod minor_sft;
pub mod orpo;
pub mod registry;
pub mod simpo;

use candle_core::{Result, Tensor};

pub struct TokenBatch<'a> {
    pub logps: &'a Tensor,
    pub mask: &'a Tensor,
    pub ref_logps: Option<&'a Tensor>,
    pub lse: Option<&'a Tensor>,
    /// Target tokens in the whole optimizer step (all micro-batches): token-mean losses divide by this,
    /// so gradient accumulation equals one large batch.
    pub step_tokens: f64,
    /// Rows in the whole optimizer step, for row-mean losses.
    pub step_rows: f64,
    /// (B, T) 1 at every real (non-padding) target position, prompt included — for losses that
    /// also train on the prompt (ORPO's NLL term).
    pub valid: Option<&'a Tensor>,
    /// (B) 1 = desirable, 0 = undesirable, for unpaired objectives (KTO).
    pub labels: Option<&'a Tensor>,
    /// (P, K) list labels ψ for listwise objectives (LiPO); the batch's rows are K·P, slot-major.
    pub scores: Option<&'a Tensor>,
}

pub struct LossOutput {
    /// This micro-batch's share of the step loss (the step loss is the sum over micro-batches).
    pub loss: Tensor,
    /// Extra per-step metrics (summed over micro-batches, like the loss).
    pub metrics: Vec<(&'static str, f64)>,
}

pub trait Objective: Send + Sync {
    fn name(&self) -> &'static str;
    /// Whether the trainer must run the frozen reference model.
    fn needs_reference(&self) -> bool {
        false
    }
    /// Whether the trainer must provide `lse`.
    fn needs_lse(&self) -> bool {
        false
    }
    /// Whether only completion/assistant tokens are targets (SFT), or every token (LM).
    fn completion_only(&self) -> bool {
        true
    }
    /// Whether rows come as preference pairs (the batch: P chosen rows, then their P rejected rows).
    fn pairs(&self) -> bool {
        false
    }
    /// Whether rows may be ranked lists `{"prompt", "responses", "scores"}` (K responses each;
    /// preference pairs count as two-item lists scored [1, 0]).
    fn lists(&self) -> bool {
        false
    }
    /// Whether rows are labelled `{"prompt", "completion", "label"}` and each batch gets KL rows
    /// (every prompt with the previous row's completion) appended — KTO. The reference log-probs of
    /// KL rows depend on the batch, so they are not cached.
    fn kl_rows(&self) -> bool {
        false
    }
    fn loss(&self, batch: &TokenBatch) -> Result<LossOutput>;
}

/// The rows `objective` takes, for graft-data's row building.
pub fn row_shape(objective: &dyn Objective) -> graft_data::rows::RowShape {
    graft_data::rows::RowShape {
        objective: objective.name(),
        completion_only: objective.completion_only(),
        pairs: objective.pairs(),
        lists: objective.lists(),
        labelled: objective.kl_rows(),
    }
}
