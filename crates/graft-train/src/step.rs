//! One optimizer step and evaluation, shared by the training loop (`trainer.rs`) and
//! `graft bench train`: forwards, objective, backward, gradient accumulation, clipping, AdamW.

use candle_core::{DType, Device, Tensor};

use graft_data::rows::TrainRow;

use crate::batch::{collate, Batch};
use crate::net::batch_logps;
use crate::objectives::{Objective, TokenBatch};
use crate::optim::{clip_grad_norm, AdamW};
use crate::TrainError;
use graft_models::{LanguageModel, Model};

/// An evaluation: the loss and the `eval_*` metrics.
pub type Eval = (f64, Vec<(String, f64)>);

/// The reference's log-probs for a batch: cached in the rows, else from the reference model.
fn reference_logps(
    batch: &Batch,
    reference: Option<&Model>,
) -> candle_core::Result<Option<Tensor>> {
    match (&batch.ref_logps, reference) {
        (Some(cached), _) => Ok(Some(cached.clone())),
        (None, Some(r)) => Ok(Some(batch_logps(r, batch, false, false)?.0.detach())),
        (None, None) => Ok(None),
    }
}

/// Evaluation on `rows` (no dropout, no gradient): the token-mean cross-entropy for sequence
/// objectives; for preference and KTO objectives the objective's own loss and metrics (reward
/// accuracy and margins on held-out pairs), averaged over rows.
pub(crate) fn evaluate(
    model: &Model,
    reference: Option<&Model>,
    objective: &dyn Objective,
    rows: &[TrainRow],
    batch_size: usize,
    device: &Device,
) -> Result<Eval, TrainError> {
    let grouped = objective.pairs() || objective.kl_rows();
    let (mut total, mut n) = (0.0, 0.0);
    let mut sums: std::collections::BTreeMap<&'static str, f64> = Default::default();
    for chunk in rows.chunks(batch_size.max(1)) {
        let batch = collate(&chunk.iter().collect::<Vec<_>>(), device)?;
        let (logps, lse) = batch_logps(model, &batch, false, objective.needs_lse())?;
        let logps = logps.detach();
        if !grouped {
            total -= (logps * &batch.mask)?.sum_all()?.to_scalar::<f32>()? as f64;
            n += batch.target_tokens as f64;
            continue;
        }
        let ref_logps = reference_logps(&batch, reference)?;
        let out = objective.loss(&TokenBatch {
            logps: &logps,
            mask: &batch.mask,
            ref_logps: ref_logps.as_ref(),
            lse: lse.as_ref(),
            step_tokens: batch.target_tokens.max(1) as f64,
            step_rows: batch.rows as f64,
            valid: Some(&batch.valid),
            labels: batch.labels.as_ref(),
            scores: batch.scores.as_ref(),
        })?;
        let w = chunk.len() as f64;
        total += out.loss.to_scalar::<f32>()? as f64 * w;
        for (k, v) in out.metrics {
            *sums.entry(k).or_default() += v * w;
        }
        n += w;
    }
    let n = n.max(1.0);
    Ok((
        total / n,
        sums.into_iter()
            .map(|(k, v)| (format!("eval_{k}"), v / n))
            .collect(),
    ))
}

/// Dropout seeds of a step's micro-batches: functions of (seed, step, micro-step), so a resumed run
/// draws the masks an uninterrupted one would.
pub(crate) fn micro_seeds(seed: u64, step: usize) -> impl Fn(usize) -> u64 {
    move |micro| {
        seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (micro as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)
    }
}

pub struct StepOutput {
    pub loss: f64,
    pub grad_norm: f64,
    pub metrics: std::collections::BTreeMap<&'static str, f64>,
}

/// Adds one micro-batch's gradients (from the graph, and from the side store that recomputed and
/// fused blocks fill) to `acc`, one slot per optimizer variable, in f32 whatever the model dtype.
fn accumulate(
    acc: &mut [Option<Tensor>],
    grads: &candle_core::backprop::GradStore,
    opt: &AdamW,
) -> candle_core::Result<()> {
    let mut side = graft_models::layers::side_grads::take_side_grads();
    for (slot, (_, var)) in acc.iter_mut().zip(opt.vars()) {
        let g = match (grads.get(var.as_tensor()), side.remove(&var.id())) {
            (Some(a), Some(b)) => Some((a + b)?),
            (a, b) => a.cloned().or(b),
        };
        if let Some(g) = g {
            let g = g.to_dtype(DType::F32)?;
            *slot = Some(match slot.take() {
                Some(a) => (a + g)?,
                None => g,
            });
        }
    }
    Ok(())
}

/// One optimizer step over `batches` (the step's micro-batches): forwards, objective, backward,
/// gradient accumulation, clipping, AdamW update. A non-finite loss or gradient norm stops it before
/// the update.
#[allow(clippy::too_many_arguments)]
pub fn optimizer_step(
    model: &Model,
    reference: Option<&Model>,
    objective: &dyn Objective,
    opt: &mut AdamW,
    batches: &[Batch],
    lr: f64,
    max_grad_norm: Option<f64>,
    dropout_seed: impl Fn(usize) -> u64,
) -> Result<StepOutput, TrainError> {
    let step_tokens = batches
        .iter()
        .map(|b| b.target_tokens)
        .sum::<usize>()
        .max(1) as f64;
    let step_rows = batches.iter().map(|b| b.rows).sum::<usize>() as f64;
    let mut acc: Vec<Option<Tensor>> = vec![None; opt.vars().count()];
    let (mut loss, mut metrics) = (
        0.0f64,
        std::collections::BTreeMap::<&'static str, f64>::new(),
    );
    // Declared before the forward: checkpointed and fused blocks hand these tensors' gradients
    // over on the side.
    graft_models::layers::side_grads::set_trainable(opt.vars().map(|(_, v)| v.id()));
    // Left over from a backward run outside a step (none normally).
    graft_models::layers::side_grads::take_side_grads();
    for (micro, batch) in batches.iter().enumerate() {
        model.set_dropout_seed(dropout_seed(micro));
        let (logps, lse) = batch_logps(model, batch, true, objective.needs_lse())?;
        let ref_logps = reference_logps(batch, reference)?;
        let out = objective.loss(&TokenBatch {
            logps: &logps,
            mask: &batch.mask,
            ref_logps: ref_logps.as_ref(),
            lse: lse.as_ref(),
            step_tokens,
            step_rows,
            valid: Some(&batch.valid),
            labels: batch.labels.as_ref(),
            scores: batch.scores.as_ref(),
        })?;
        loss += out.loss.to_scalar::<f32>()? as f64;
        for (k, v) in out.metrics {
            *metrics.entry(k).or_default() += v;
        }
        accumulate(&mut acc, &out.loss.backward()?, opt)?;
    }
    let mut grads = acc
        .into_iter()
        .zip(opt.vars())
        .map(|(g, (_, v))| g.map_or_else(|| v.as_tensor().zeros_like()?.to_dtype(DType::F32), Ok))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let non_finite = |what, value| TrainError::NonFinite {
        step: opt.step,
        what,
        value,
        checkpoint: String::new(),
    };
    if !loss.is_finite() {
        return Err(non_finite("loss", loss));
    }
    opt.mask_frozen(&mut grads)?;
    let grad_norm = clip_grad_norm(&mut grads, max_grad_norm)?;
    if !grad_norm.is_finite() {
        return Err(non_finite("gradient norm", grad_norm));
    }
    opt.update(&grads, lr)?;
    Ok(StepOutput {
        loss,
        grad_norm,
        metrics,
    })
}
