//! ORPO (Hong et al. 2024, arXiv 2403.07691, eq. 6–7): reference-free; SFT on the chosen response
//! plus an odds-ratio term, as TRL 1.16's ORPOTrainer: with p = exp(mean log-prob of the response),
//! log odds = log p − log(1 − p) and r = log odds(y_w) − log odds(y_l),
//! `L = NLL(chosen) − β · mean log σ(r)`. TRL's NLL is the token mean over every real target of the
//! chosen sequences, prompt included (not only the response).
//! Shapes: 2P rows, P chosen then P rejected; `logps`, `mask`, `valid` (2P, T).

use candle_core::{Result, Tensor};

use super::dpo::{halves, log_sigmoid, row_logps};
use super::{LossOutput, Objective, TokenBatch};

pub struct Orpo {
    pub beta: f64,
}

/// log(1 − eˣ) for x < 0. (TRL switches to log(−expm1 x) above −ln 2; the plain form is accurate
/// to float precision for the mean log-probs seen in practice, well below −ln 2.)
fn log1mexp(x: &Tensor) -> Result<Tensor> {
    (x.minimum(-1e-7)?.exp()?.neg()? + 1.0)?.log()
}

impl Objective for Orpo {
    fn name(&self) -> &'static str {
        "orpo"
    }

    fn pairs(&self) -> bool {
        true
    }

    fn loss(&self, b: &TokenBatch) -> Result<LossOutput> {
        let valid = b.valid.ok_or_else(|| {
            candle_core::Error::Msg("orpo needs the batch's valid-token mask".into())
        })?;
        let (c, r) = halves(&row_logps(b.logps, b.mask, true)?)?;
        let ratio = ((&c - &r)? - (log1mexp(&c)? - log1mexp(&r)?)?)?;
        let pairs = c.dim(0)? as f64;
        let share = pairs / (b.step_rows / 2.0);
        let or_term = (log_sigmoid(&ratio)?.mean_all()? * -self.beta)?;
        let (lp_c, _) = halves(b.logps)?;
        let (valid_c, _) = halves(valid)?;
        let nll =
            ((lp_c * &valid_c)?.sum_all()?.neg()? / valid_c.sum_all()?.to_scalar::<f32>()? as f64)?;
        let loss = ((&nll + &or_term)? * share)?;
        let scalar = |t: &Tensor| -> Result<f64> { Ok(t.to_scalar::<f32>()? as f64 * share) };
        let mean =
            |t: &Tensor| -> Result<f64> { Ok(t.mean_all()?.to_scalar::<f32>()? as f64 * share) };
        let (rc, rr) = ((&c * self.beta)?, (&r * self.beta)?);
        Ok(LossOutput {
            loss,
            metrics: vec![
                ("nll_loss", scalar(&nll)?),
                ("log_odds_ratio", mean(&log_sigmoid(&ratio)?)?),
                ("log_odds_chosen", mean(&ratio)?),
                ("rewards/chosen", mean(&rc)?),
                ("rewards/rejected", mean(&rr)?),
                ("rewards/margins", mean(&(&rc - &rr)?)?),
                (
                    "rewards/accuracies",
                    mean(&rc.gt(&rr)?.to_dtype(candle_core::DType::F32)?)?,
                ),
            ],
        })
    }
}
