//! DPO and its reference-based family on summed response log-probs (Rafailov et al. 2023,
//! arXiv 2305.18290), with TRL's `loss_type`s:
//! - `dpo` (TRL `sigmoid`): −log σ(β·h) (TRL 1.16 ignores `label_smoothing` here);
//! - `cdpo` (conservative DPO, Mitchell 2023): −(1−ε)·log σ(β·h) − ε·log σ(−β·h) with
//!   ε = `label_smoothing`, the formula TRL used for `sigmoid` before 1.x;
//! - `ipo` (Azar et al. 2023, arXiv 2310.12036): (h − 1/(2β))², h from log-probs averaged over each
//!   response's tokens;
//! - `slic` (TRL `hinge`; SLiC, Zhao et al. 2023, arXiv 2305.10425): max(0, 1 − β·h);
//! - `robust` (Chowdhury et al. 2024, arXiv 2403.00409): (−(1−ε)·log σ(β·h) + ε·log σ(−β·h)) / (1−2ε);
//! - `dpo_norm` (TRL `sigmoid_norm`; Tulu 3's length-normalised DPO, arXiv 2411.15124 §5):
//!   −log σ(β·h̄), h̄ from log-ratios averaged over each response's tokens;
//!
//! where h = (log πθ(y_w) − log πref(y_w)) − (log πθ(y_l) − log πref(y_l)).
//! Shapes: the batch's 2P rows are P chosen rows then their P rejected rows; `logps`, `mask` (2P, T).
//! Logs TRL's metrics: rewards/chosen, rewards/rejected (β·(log πθ − log πref) on summed log-probs,
//! for every loss type), rewards/margins, rewards/accuracies (strict >).

use candle_core::{Result, Tensor, D};

use super::{LossOutput, Objective, TokenBatch};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DpoLoss {
    Sigmoid,
    Conservative,
    Ipo,
    Hinge,
    Robust,
    Normalized,
}

pub struct Dpo {
    pub beta: f64,
    pub label_smoothing: f64,
    pub loss: DpoLoss,
}

/// log σ(x), stable: −log(1 + e^{−x}) for x ≥ 0, x − log(1 + e^{x}) below. Two branches joined
/// by `where_cond` rather than min(x, 0) − log(1 + e^{−|x|}): candle differentiates min and |x|
/// at 0 so that the gradient at x = 0 — every pair at step 0, when policy = reference — came
/// out 1 instead of σ(0) = ½ (torch's `logsigmoid` gives ½).
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    let zeros = x.zeros_like()?;
    let pos = x.ge(&zeros)?;
    let xp = pos.where_cond(x, &zeros)?;
    let xn = pos.where_cond(&zeros, x)?;
    let above = (xp.neg()?.exp()? + 1.0)?.log()?.neg()?;
    let below = (&xn - (xn.exp()? + 1.0)?.log()?)?;
    pos.where_cond(&above, &below)
}

/// Per-row response log-prob (B): summed, or averaged over the row's target tokens.
pub fn row_logps(logps: &Tensor, mask: &Tensor, average: bool) -> Result<Tensor> {
    let sum = (logps * mask)?.sum(D::Minus1)?;
    if average {
        sum / mask.sum(D::Minus1)?.clamp(1.0, f64::INFINITY)?
    } else {
        Ok(sum)
    }
}

/// Splits (2P) into the chosen half and the rejected half.
pub fn halves(t: &Tensor) -> Result<(Tensor, Tensor)> {
    let p = t.dim(0)? / 2;
    Ok((t.narrow(0, 0, p)?, t.narrow(0, p, p)?))
}

/// Each pair's summed log-ratios log πθ(y) − log πref(y): (chosen (P), rejected (P)).
pub fn pair_log_ratios(b: &TokenBatch, who: &str) -> Result<(Tensor, Tensor)> {
    let reference = b
        .ref_logps
        .ok_or_else(|| candle_core::Error::Msg(format!("{who} needs reference log-probs")))?;
    let (pc, pr) = halves(&row_logps(b.logps, b.mask, false)?)?;
    let (rc, rr) = halves(&row_logps(reference, b.mask, false)?)?;
    Ok(((pc - rc)?, (pr - rr)?))
}

/// h̄ (P): the pair's log-ratio margin on log-probs averaged over each response's tokens.
fn avg_log_ratio_margin(b: &TokenBatch) -> Result<Tensor> {
    let reference = b
        .ref_logps
        .ok_or_else(|| candle_core::Error::Msg("DPO needs reference log-probs".into()))?;
    let (ac, ar) = halves(&row_logps(b.logps, b.mask, true)?)?;
    let (fc, fr) = halves(&row_logps(reference, b.mask, true)?)?;
    (ac - fc)? - (ar - fr)?
}

/// TRL's reward metrics, summed over this micro-batch's pairs and divided by the step's pairs.
pub fn reward_metrics(
    chosen: &Tensor,
    rejected: &Tensor,
    step_pairs: f64,
) -> Result<Vec<(&'static str, f64)>> {
    let mean =
        |t: &Tensor| -> Result<f64> { Ok(t.sum_all()?.to_scalar::<f32>()? as f64 / step_pairs) };
    let acc = chosen.gt(rejected)?.to_dtype(candle_core::DType::F32)?;
    Ok(vec![
        ("rewards/chosen", mean(chosen)?),
        ("rewards/rejected", mean(rejected)?),
        ("rewards/margins", mean(&(chosen - rejected)?)?),
        ("rewards/accuracies", mean(&acc)?),
    ])
}

impl Objective for Dpo {
    fn name(&self) -> &'static str {
        match self.loss {
            DpoLoss::Sigmoid => "dpo",
            DpoLoss::Conservative => "cdpo",
            DpoLoss::Ipo => "ipo",
            DpoLoss::Hinge => "slic",
            DpoLoss::Robust => "robust",
            DpoLoss::Normalized => "dpo_norm",
        }
    }

    fn needs_reference(&self) -> bool {
        true
    }

    fn pairs(&self) -> bool {
        true
    }

    fn loss(&self, b: &TokenBatch) -> Result<LossOutput> {
        let (chosen, rejected) = pair_log_ratios(b, "DPO")?;
        let h = (&chosen - &rejected)?;
        let per_pair = match self.loss {
            DpoLoss::Sigmoid => log_sigmoid(&(&h * self.beta)?)?.neg()?,
            DpoLoss::Conservative => {
                let x = (&h * self.beta)?;
                let eps = self.label_smoothing;
                ((log_sigmoid(&x)? * -(1.0 - eps))? - (log_sigmoid(&x.neg()?)? * eps)?)?
            }
            DpoLoss::Ipo => (avg_log_ratio_margin(b)? - 1.0 / (2.0 * self.beta))?.sqr()?,
            DpoLoss::Normalized => log_sigmoid(&(avg_log_ratio_margin(b)? * self.beta)?)?.neg()?,
            DpoLoss::Robust => {
                let x = (&h * self.beta)?;
                let eps = self.label_smoothing;
                (((log_sigmoid(&x)? * -(1.0 - eps))? + (log_sigmoid(&x.neg()?)? * eps)?)?
                    / (1.0 - 2.0 * eps))?
            }
            DpoLoss::Hinge => ((h * -self.beta)? + 1.0)?.relu()?,
        };
        let step_pairs = b.step_rows / 2.0;
        let loss = (per_pair.sum_all()? / step_pairs)?;
        let chosen = (chosen * self.beta)?.detach();
        let rejected = (rejected * self.beta)?.detach();
        Ok(LossOutput {
            loss,
            metrics: reward_metrics(&chosen, &rejected, step_pairs)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sigmoid_values_and_gradient_at_zero() {
        let x = candle_core::Var::new(
            &[-800.0f64, -2.0, 0.0, 3.0, 800.0],
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let y: Vec<f64> = log_sigmoid(x.as_tensor()).unwrap().to_vec1().unwrap();
        let want = |v: f64| -(1.0 + (-v).exp()).ln();
        for (got, v) in y.iter().zip([-800.0, -2.0, 0.0, 3.0, 800.0]) {
            let w = if v < -700.0 { v } else { want(v) };
            assert!((got - w).abs() < 1e-12, "{got} vs {w}");
        }
        let g: Vec<f64> = log_sigmoid(x.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(&x)
            .unwrap()
            .to_vec1()
            .unwrap();
        // d/dx log σ(x) = σ(−x)
        for (got, v) in g.iter().zip([-800.0f64, -2.0, 0.0, 3.0, 800.0]) {
            let w = 1.0 / (1.0 + v.exp());
            assert!((got - w).abs() < 1e-12, "at {v}: {got} vs {w}");
        }
    }
}
