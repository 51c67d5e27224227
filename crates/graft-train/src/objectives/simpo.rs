//! SimPO (Meng et al. 2024, arXiv 2405.14734, eq. 6): reference-free, on length-averaged response
//! log-probs with a target margin γ: −log σ(β·(avg log πθ(y_w) − avg log πθ(y_l)) − γ), as TRL's
//! CPOTrainer with `loss_type="simpo"` (its `cpo_alpha` NLL term off).
//! Shapes: 2P rows, P chosen then P rejected; `logps`, `mask` (2P, T).

use candle_core::Result;

use super::dpo::{halves, log_sigmoid, reward_metrics, row_logps};
use super::{LossOutput, Objective, TokenBatch};

pub struct SimPo {
    pub beta: f64,
    pub gamma: f64,
    pub label_smoothing: f64,
}

impl Objective for SimPo {
    fn name(&self) -> &'static str {
        "simpo"
    }

    fn pairs(&self) -> bool {
        true
    }

    fn loss(&self, b: &TokenBatch) -> Result<LossOutput> {
        let (c, r) = halves(&row_logps(b.logps, b.mask, true)?)?;
        let x = (((&c - &r)? * self.beta)? - self.gamma)?;
        let eps = self.label_smoothing;
        let per_pair = ((log_sigmoid(&x)? * -(1.0 - eps))? - (log_sigmoid(&x.neg()?)? * eps)?)?;
        let step_pairs = b.step_rows / 2.0;
        let loss = (per_pair.sum_all()? / step_pairs)?;
        let metrics = reward_metrics(
            &(c * self.beta)?.detach(),
            &(r * self.beta)?.detach(),
            step_pairs,
        )?;
        Ok(LossOutput { loss, metrics })
    }
}
