//! MinorSFT (Xie et al. 2024, "Minor SFT loss for LLM fine-tune to increase performance and reduce
//! model deviation", arXiv 2408.10642): SFT with DPO's sample-level dynamic coefficient. Per row with
//! m response tokens and r = log πθ(y|x) − log πref(y|x),
//! `L = −(2 / (β·m)) · log σ(β·r)`, whose gradient is the paper's
//! `−(2/m) · σ(−β·r) · ∇ log πθ(y|x)`; averaged over the rows of the step.
//! Needs the frozen reference model. Logs `deviation` = mean of r/m (the paper's metric).

use candle_core::{Result, D};

use super::{LossOutput, Objective, TokenBatch};

pub struct MinorSft {
    pub beta: f64,
}

impl Objective for MinorSft {
    fn name(&self) -> &'static str {
        "minor_sft"
    }

    fn needs_reference(&self) -> bool {
        true
    }

    fn loss(&self, b: &TokenBatch) -> Result<LossOutput> {
        let reference = b
            .ref_logps
            .ok_or_else(|| candle_core::Error::Msg("minor_sft needs reference log-probs".into()))?;
        let m = b.mask.sum(D::Minus1)?.clamp(1.0, f64::INFINITY)?; // (B)
        let r = ((b.logps - reference)? * b.mask)?.sum(D::Minus1)?; // (B)
        let log_sigmoid = super::dpo::log_sigmoid(&(&r * self.beta)?)?;
        let per_row = ((log_sigmoid / &m)? * (-2.0 / self.beta))?;
        let loss = (per_row.sum_all()? / b.step_rows)?;
        let deviation = ((&r / &m)?.sum_all()?.to_scalar::<f32>()? as f64) / b.step_rows;
        Ok(LossOutput {
            loss,
            metrics: vec![("deviation", deviation)],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn matches_the_formula() {
        // Reference computed in plain Python from the paper's loss (no library implements it):
        // rows r = [-0.3, 0.2], m = [2, 2], β = 0.1 → mean of −(2/(β·m))·log σ(β·r) = 7.211033218,
        // deviation = mean(r/m) = −0.275.
        let d = &Device::Cpu;
        let logps = Tensor::new(&[[-1.0f32, -2.0, -0.5], [-0.3, -4.0, -1.0]], d).unwrap();
        let reference = Tensor::new(&[[-1.2f32, -1.5, -0.7], [-0.5, -3.0, -2.0]], d).unwrap();
        let mask = Tensor::new(&[[0f32, 1.0, 1.0], [1.0, 1.0, 0.0]], d).unwrap();
        let out = MinorSft { beta: 0.1 }
            .loss(&TokenBatch {
                logps: &logps,
                mask: &mask,
                ref_logps: Some(&reference),
                lse: None,
                step_tokens: 4.0,
                step_rows: 2.0,
                valid: None,
                labels: None,
                scores: None,
            })
            .unwrap();
        let loss = out.loss.to_scalar::<f32>().unwrap();
        assert!((loss - 7.211_033).abs() < 1e-5, "{loss}");
        assert!((out.metrics[0].1 + 0.275).abs() < 1e-6);
    }
}
