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
