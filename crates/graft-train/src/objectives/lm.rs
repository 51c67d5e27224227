//! `lm` and `sft`: next-token cross-entropy, the mean over target tokens of the step (transformers'
//! `ForCausalLMLoss` with `num_items_in_batch`), plus optional z-loss `z_loss · mean(lse²)`
//! (OLMo 2, after PaLM). `lm` trains on every token; `sft` only on completion/assistant tokens —
//! the same loss over a different mask.

use candle_core::Result;

use super::{LossOutput, Objective, TokenBatch};

pub struct Lm {
    pub z_loss: f64,
    pub completion_only: bool,
}

impl Objective for Lm {
    fn name(&self) -> &'static str {
        if self.completion_only {
            "sft"
        } else {
            "lm"
        }
    }

    fn needs_lse(&self) -> bool {
        self.z_loss > 0.0
    }

    fn completion_only(&self) -> bool {
        self.completion_only
    }

    fn loss(&self, b: &TokenBatch) -> Result<LossOutput> {
        let nll = (b.logps * b.mask)?.sum_all()?.neg()?;
        let ce = (nll / b.step_tokens)?;
        let mut metrics = vec![("ce", ce.to_scalar::<f32>()? as f64)];
        let loss = match (self.z_loss > 0.0, b.lse) {
            (true, Some(lse)) => {
                let z = ((lse.sqr()? * b.mask)?.sum_all()? / b.step_tokens)?;
                metrics.push(("z_loss", z.to_scalar::<f32>()? as f64));
                (ce + (z * self.z_loss)?)?
            }
            _ => ce,
        };
        Ok(LossOutput { loss, metrics })
    }
}
