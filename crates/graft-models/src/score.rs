//! Per-token log-likelihood of whole sequences, batched by length — what `graft score`, evaluation
//! and cached reference log-probs share.
//!
//! Shapes: rows padded to (B, T); logits (B, T, V); returned per row: T_row - 1 values,
//! value i = log p(ids[i+1] | ids[..=i]).

use candle_core::{DType, Device, Result, Tensor, D};

use crate::decoder::{next_token_logprobs, Decoder};

/// Rows are grouped so one batch's logits stay under this many bytes (f32).
const LOGITS_BUDGET_BYTES: usize = 256 << 20;

/// Scores one padded batch. Right padding is exact under a causal mask: padded positions come
/// after every real one, so no real position attends to them.
pub fn score_batch(model: &Decoder, rows: &[&[u32]], device: &Device) -> Result<Vec<Vec<f32>>> {
    let t = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    if t < 2 {
        return Ok(rows.iter().map(|_| Vec::new()).collect());
    }
    let mut flat = Vec::with_capacity(rows.len() * t);
    for r in rows {
        flat.extend_from_slice(r);
        flat.extend(std::iter::repeat_n(0u32, t - r.len()));
    }
    let ids = Tensor::from_vec(flat, (rows.len(), t), device)?;
    let logits = model.forward(&ids, None, false)?.to_dtype(DType::F32)?;
    let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let values: Vec<Vec<f32>> = next_token_logprobs(&log_probs, &ids)?.to_vec2()?;
    Ok(values
        .into_iter()
        .zip(rows)
        .map(|(v, r)| v[..r.len().saturating_sub(1)].to_vec())
        .collect())
}

/// Scores all rows, `on_batch(tokens_done)` after each batch; results in input order.
pub fn score_rows(
    model: &Decoder,
    rows: &[Vec<u32>],
    device: &Device,
    mut on_batch: impl FnMut(usize),
) -> Result<Vec<Vec<f32>>> {
    let vocab = model.cfg.vocab_size.max(1);
    let budget_tokens = (LOGITS_BUDGET_BYTES / (4 * vocab)).max(1);
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| rows[i].len());
    let mut out = vec![Vec::new(); rows.len()];
    let mut start = 0;
    while start < order.len() {
        // Sorted by length, so the batch's longest row is its last one.
        let mut end = start + 1;
        while end < order.len() && (end + 1 - start) * rows[order[end]].len() <= budget_tokens {
            end += 1;
        }
        let batch: Vec<&[u32]> = order[start..end]
            .iter()
            .map(|&i| rows[i].as_slice())
            .collect();
        let scored = score_batch(model, &batch, device)?;
        for (&i, s) in order[start..end].iter().zip(scored) {
            out[i] = s;
        }
        on_batch(batch.iter().map(|r| r.len()).sum());
        start = end;
    }
    Ok(out)
}

/// Seq2seq scoring: for each (input ids, target ids) row, log p(target[i] | input, target[..i]) for
/// every target position. Rows are batched by length (inputs right-padded with the pad id and
/// masked; targets padded after their end, where the causal decoder cannot see them).
pub fn score_seq2seq(
    model: &crate::t5::T5,
    rows: &[(Vec<u32>, Vec<u32>)],
    device: &Device,
    mut on_batch: impl FnMut(usize),
) -> Result<Vec<Vec<f32>>> {
    let vocab = model.cfg.vocab_size.max(1);
    let budget_tokens = (LOGITS_BUDGET_BYTES / (4 * vocab)).max(1);
    let pad = model.cfg.pad_token_id.unwrap_or(0);
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| (rows[i].1.len(), rows[i].0.len()));
    let mut out = vec![Vec::new(); rows.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && (end + 1 - start) * rows[order[end]].1.len() <= budget_tokens {
            end += 1;
        }
        let batch: Vec<&(Vec<u32>, Vec<u32>)> =
            order[start..end].iter().map(|&i| &rows[i]).collect();
        let s = batch.iter().map(|r| r.0.len()).max().unwrap_or(1).max(1);
        let t = batch.iter().map(|r| r.1.len()).max().unwrap_or(1).max(1);
        let (mut ids, mut mask, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for (input, target) in &batch {
            ids.extend(
                input
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(pad, s - input.len())),
            );
            mask.extend((0..s).map(|j| if j < input.len() { 1f32 } else { 0.0 }));
            labels.push(
                target
                    .iter()
                    .map(|&x| x as i64)
                    .chain(std::iter::repeat_n(-100, t - target.len()))
                    .collect::<Vec<_>>(),
            );
        }
        let b = batch.len();
        let ids = Tensor::from_vec(ids, (b, s), device)?;
        let mask = Tensor::from_vec(mask, (b, s), device)?;
        let decoder_ids = Tensor::new(model.shift_right(&labels)?, device)?;
        let logits = model
            .forward(&ids, Some(&mask), &decoder_ids, false)?
            .to_dtype(DType::F32)?;
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let targets: Vec<u32> = labels.iter().flatten().map(|&l| l.max(0) as u32).collect();
        let targets = Tensor::from_vec(targets, (b, t, 1), device)?;
        let picked: Vec<Vec<f32>> = log_probs
            .gather(&targets, D::Minus1)?
            .squeeze(D::Minus1)?
            .to_vec2()?;
        for ((&i, row), (_, target)) in order[start..end].iter().zip(picked).zip(&batch) {
            out[i] = row[..target.len()].to_vec();
        }
        on_batch(batch.iter().map(|r| r.0.len() + r.1.len()).sum());
        start = end;
    }
    Ok(out)
}
