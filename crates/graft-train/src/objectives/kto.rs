//! KTO (Ethayarajh et al. 2024, arXiv 2402.01306, eq. 7), as TRL 1.16's KTOTrainer: unpaired rows
//! `{"prompt", "completion", "label"}`. With r = log πθ(y|x) − log πref(y|x) (summed) and the
//! reference point z = max(0, mean over KL rows of r) — KL rows pair each prompt with the previous
//! row's completion in the batch, detached —
//! desirable rows lose `λ_D · (1 − σ(β·(r − z)))`, undesirable rows `λ_U · (1 − σ(β·(z − r)))`,
//! averaged over rows.
//! Shapes: 2B rows, B labelled rows then their B KL rows; `labels` (B) 1 = desirable.

use candle_core::{DType, Result, Tensor};

use super::dpo::{halves, row_logps};
use super::{LossOutput, Objective, TokenBatch};

pub struct Kto {
    pub beta: f64,
    pub desirable_weight: f64,
    pub undesirable_weight: f64,
}

impl Objective for Kto {
    fn name(&self) -> &'static str {
        "kto"
    }

    fn needs_reference(&self) -> bool {
        true
    }

    fn kl_rows(&self) -> bool {
        true
    }

    fn loss(&self, b: &TokenBatch) -> Result<LossOutput> {
        let reference = b
            .ref_logps
            .ok_or_else(|| candle_core::Error::Msg("kto needs reference log-probs".into()))?;
        let labels = b
            .labels
            .ok_or_else(|| candle_core::Error::Msg("kto needs row labels".into()))?;
        let (pol, pol_kl) = halves(&row_logps(b.logps, b.mask, false)?)?;
        let (refr, ref_kl) = halves(&row_logps(reference, b.mask, false)?)?;
        let z = (pol_kl - ref_kl)?
            .detach()
            .mean_all()?
            .to_scalar::<f32>()?
            .max(0.0) as f64;
        let r = (&pol - &refr)?;
        let desirable = ((r.clone() - z)? * self.beta)?;
        let undesirable = ((r.neg()? + z)? * self.beta)?;
        let sig = |x: &Tensor| candle_nn::ops::sigmoid(x);
        let d_loss = ((sig(&desirable)?.neg()? + 1.0)? * self.desirable_weight)?;
        let u_loss = ((sig(&undesirable)?.neg()? + 1.0)? * self.undesirable_weight)?;
        let not = (labels.neg()? + 1.0)?;
        let per_row = ((&d_loss * labels)? + (&u_loss * &not)?)?;
        let step_rows = b.step_rows / 2.0;
        let loss = (per_row.sum_all()? / step_rows)?;
        // TRL: rewards are β·r (no z), averaged within each label group.
        let rewards = (r * self.beta)?.detach();
        let group_mean = |w: &Tensor| -> Result<f64> {
            let n = w.sum_all()?.to_scalar::<f32>()? as f64;
            Ok(if n > 0.0 {
                (&rewards * w)?.sum_all()?.to_scalar::<f32>()? as f64 / n
            } else {
                f64::NAN
            })
        };
        let (chosen, rejected) = (group_mean(labels)?, group_mean(&not)?);
        let share = labels.dim(0)? as f64 / step_rows;
        Ok(LossOutput {
            loss,
            metrics: vec![
                ("kl", z * share),
                ("rewards/chosen", chosen * share),
                ("rewards/rejected", rejected * share),
                ("rewards/margins", (chosen - rejected) * share),
            ],
        })
    }
}

/// Labels (B) as a tensor: 1 desirable, 0 undesirable.
pub fn label_tensor(labels: &[bool], device: &candle_core::Device) -> Result<Tensor> {
    Tensor::from_iter(labels.iter().map(|&l| l as u8 as f32), device)?.to_dtype(DType::F32)
}
