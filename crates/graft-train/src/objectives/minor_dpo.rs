//! MinorDPO (Xie et al. 2024, "Minor DPO reject penalty to increase training robustness", arXiv
//! 2408.09834): DPO whose rejected response is pushed down only while the policy rates it above
//! the reference — the rejected log-ratio is clamped at 0:
//! `L = −log σ(β·(r_w − max(0, r_l)))`, r = log πθ(y|x) − log πref(y|x) on summed response
//! log-probs. (Formula as the paper's abstract describes it and as the public implementation
//! oxRL `algs/minor_dpo.py` writes it; the paper's own equation could not be read here.) Once
//! r_l ≤ 0 the rejected response gets no gradient, so the policy is not driven ever further from
//! the reference on it, DPO's known failure at larger learning rates.
//!
//! Shapes as DPO: the batch's 2P rows are P chosen rows then their P rejected rows. Metrics are
//! TRL's reward metrics on the unclamped log-ratios.

use candle_core::{Result, Tensor};

use super::dpo::{log_sigmoid, pair_log_ratios, reward_metrics};
use super::{LossOutput, Objective, TokenBatch};

pub struct MinorDpo {
    pub beta: f64,
}

/// Per-pair MinorDPO loss from summed log-ratios (P).
pub fn minor_dpo_loss(chosen_ratio: &Tensor, rejected_ratio: &Tensor, beta: f64) -> Result<Tensor> {
    let h = (chosen_ratio - rejected_ratio.relu()?)?;
    log_sigmoid(&(h * beta)?)?.neg()
}

impl Objective for MinorDpo {
    fn name(&self) -> &'static str {
        "minor_dpo"
    }

    fn needs_reference(&self) -> bool {
        true
    }

    fn pairs(&self) -> bool {
        true
    }

    fn loss(&self, b: &TokenBatch) -> Result<LossOutput> {
        let (chosen, rejected) = pair_log_ratios(b, "minor_dpo")?;
        let step_pairs = b.step_rows / 2.0;
        let loss = (minor_dpo_loss(&chosen, &rejected, self.beta)?.sum_all()? / step_pairs)?;
        let metrics = reward_metrics(
            &(chosen * self.beta)?.detach(),
            &(rejected * self.beta)?.detach(),
            step_pairs,
        )?;
        Ok(LossOutput { loss, metrics })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn rejected_gets_no_gradient_below_the_reference() {
        // r_l = −0.5 (below the reference): the loss is DPO's with r_l = 0, and ∂L/∂r_l = 0;
        // r_l = +0.8: the loss is DPO's.
        let beta = 0.1;
        let c = candle_core::Var::new(&[0.3f64, 0.3], &Device::Cpu).unwrap();
        let r = candle_core::Var::new(&[-0.5f64, 0.8], &Device::Cpu).unwrap();
        let loss = minor_dpo_loss(c.as_tensor(), r.as_tensor(), beta).unwrap();
        let got: Vec<f64> = loss.to_vec1().unwrap();
        let dpo = |h: f64| (1.0 + (-beta * h).exp()).ln();
        assert!((got[0] - dpo(0.3)).abs() < 1e-12);
        assert!((got[1] - dpo(0.3 - 0.8)).abs() < 1e-12);
        let grads = loss.sum_all().unwrap().backward().unwrap();
        let gr: Vec<f64> = grads.get(&r).unwrap().to_vec1().unwrap();
        assert_eq!(gr[0], 0.0);
        // d/dr_l −log σ(β(c − r_l)) = β·σ(−β(c − r_l))
        let want = beta / (1.0 + (beta * (0.3 - 0.8f64)).exp());
        assert!((gr[1] - want).abs() < 1e-12, "{} vs {want}", gr[1]);
    }
}
