//! Collation: training rows (graft-data's `TrainRow`) into the tensors of one micro-batch —
//! right-padded token streams and loss masks, packed positions and segments, encoder inputs,
//! cached reference log-probs, preference pairs and lists stacked slot-major, KTO's KL rows.
//!
//! Shapes: `ids` (B, T) u32, `mask` and `valid` (B, T−1) f32, packed `positions`/`segments`
//! (B, T) u32, encoder ids and mask (B, S), `ref_logps` (B, T−1), `scores` (P, K).

use candle_core::{Device, Result as CResult, Tensor};
use graft_data::rows::TrainRow;

pub struct Batch {
    pub ids: Tensor,
    pub mask: Tensor,
    /// (B, T-1): 1 at every real target position (all but padding), prompt included.
    pub valid: Tensor,
    pub packed: Option<(Tensor, Tensor)>,
    /// Cached reference log-probs (B, T-1), when every row has them.
    pub ref_logps: Option<Tensor>,
    /// KTO labels (B) of the first half of the rows; the second half are their KL rows.
    pub labels: Option<Tensor>,
    /// List labels (P, K) of listwise rows (the K·P rows are slot-major).
    pub scores: Option<Tensor>,
    /// Each row's task index (`u32::MAX`: none).
    pub tasks: Vec<u32>,
    /// Encoder ids and 0/1 mask (B, S), for encoder-decoder models.
    pub encoder: Option<(Tensor, Tensor)>,
    pub target_tokens: usize,
    pub input_tokens: usize,
    pub rows: usize,
}

/// Right-pads `rows` to one length. Padding is never a target, and under a causal mask no real token
/// attends to it, so padding changes nothing (a real EOS stays a target even when pad = eos).
/// KTO's KL row for row i: its prompt with row i−1's completion (TRL's pairing within a batch).
fn kl_rows(rows: &[&TrainRow]) -> Vec<TrainRow> {
    let split = |r: &TrainRow| {
        r.targets
            .iter()
            .position(|&t| t)
            .unwrap_or(r.input_ids.len())
    };
    (0..rows.len())
        .map(|i| {
            let (p, c) = (rows[i], rows[(i + rows.len() - 1) % rows.len()]);
            if p.encoder_ids.is_some() {
                // Seq2seq: the prompt is the encoder input, the completion the decoder stream.
                return TrainRow {
                    task: p.task,
                    encoder_ids: p.encoder_ids.clone(),
                    input_ids: c.input_ids.clone(),
                    targets: c.targets.clone(),
                    ..Default::default()
                };
            }
            let (pn, cn) = (split(p), split(c));
            let mut input_ids = p.input_ids[..pn].to_vec();
            input_ids.extend_from_slice(&c.input_ids[cn..]);
            let targets = (0..input_ids.len()).map(|j| j >= pn.max(1)).collect();
            TrainRow {
                input_ids,
                targets,
                ..Default::default()
            }
        })
        .collect()
}

/// Preference pairs become 2P rows: the P chosen sequences, then their P rejected ones; lists of K
/// responses become K·P rows the same way (every first response, then every second, …), with
/// their labels as `scores` (P, K). Labelled
/// (KTO) rows become 2B rows: the B rows, then their KL rows.
pub fn collate(rows: &[&TrainRow], device: &Device) -> CResult<Batch> {
    if rows.iter().any(|r| r.label.is_some()) {
        let kl = kl_rows(rows);
        let mut all: Vec<&TrainRow> = rows.to_vec();
        all.extend(kl.iter());
        let mut batch = collate_rows(&all, device)?;
        let labels: Vec<bool> = rows.iter().map(|r| r.label.unwrap_or(true)).collect();
        batch.labels = Some(crate::objectives::kto::label_tensor(&labels, device)?);
        return Ok(batch);
    }
    if rows.iter().any(|r| !r.others.is_empty()) {
        let k = 1 + rows[0].others.len();
        if rows.iter().any(|r| 1 + r.others.len() != k) {
            return Err(candle_core::Error::Msg(
                "a batch mixes lists of different lengths".into(),
            ));
        }
        // Slot-major: every row's first response, then every row's second, …
        let all: Vec<&TrainRow> = (0..k)
            .flat_map(|slot| {
                rows.iter()
                    .map(move |r| r.parts().nth(slot).expect("k parts"))
            })
            .collect();
        let mut batch = collate_rows(&all, device)?;
        if rows.iter().all(|r| r.scores.is_some()) {
            let scores: Vec<f32> = rows
                .iter()
                .flat_map(|r| r.scores.clone().unwrap_or_default())
                .collect();
            batch.scores = Some(Tensor::from_vec(scores, (rows.len(), k), device)?);
        }
        return Ok(batch);
    }
    collate_rows(rows, device)
}

/// Encoder inputs (B, S) and their 0/1 mask, right-padded with id 0 (T5's pad), when any row
/// has one.
fn encoder_inputs(rows: &[&TrainRow], device: &Device) -> CResult<Option<(Tensor, Tensor)>> {
    if rows.iter().all(|r| r.encoder_ids.is_none()) {
        return Ok(None);
    }
    let b = rows.len();
    let s = rows
        .iter()
        .map(|r| r.encoder_ids.as_ref().map_or(0, Vec::len))
        .max()
        .unwrap_or(0)
        .max(1);
    let (mut enc, mut enc_mask) = (Vec::with_capacity(b * s), Vec::with_capacity(b * s));
    for r in rows {
        let e = r.encoder_ids.as_deref().unwrap_or(&[]);
        enc.extend(e.iter().copied().chain(std::iter::repeat_n(0, s - e.len())));
        enc_mask.extend((0..s).map(|j| if j < e.len() { 1f32 } else { 0.0 }));
    }
    Ok(Some((
        Tensor::from_vec(enc, (b, s), device)?,
        Tensor::from_vec(enc_mask, (b, s), device)?,
    )))
}

/// The rows as one right-padded batch (no pairing, lists or KL rows: see [`collate`]).
pub(crate) fn collate_rows(rows: &[&TrainRow], device: &Device) -> CResult<Batch> {
    let t = rows.iter().map(|r| r.input_ids.len()).max().unwrap_or(0);
    let (mut ids, mut mask, mut pos, mut seg) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let packed = rows.iter().any(|r| r.packed.is_some());
    let cached = rows.iter().all(|r| r.ref_logps.is_some());
    let mut refs = Vec::new();
    let mut valid = Vec::new();
    for r in rows {
        let n = r.input_ids.len();
        valid.extend(std::iter::repeat_n(1f32, n.saturating_sub(1)));
        valid.extend(std::iter::repeat_n(0f32, t - n.max(1)));
        if let (true, Some(lp)) = (cached, &r.ref_logps) {
            refs.extend_from_slice(lp);
            refs.extend(std::iter::repeat_n(0f32, t - n));
        }
        ids.extend_from_slice(&r.input_ids);
        ids.extend(std::iter::repeat_n(0u32, t - n));
        mask.extend(r.targets[1..].iter().map(|&b| b as u8 as f32));
        mask.extend(std::iter::repeat_n(0f32, t - n));
        if packed {
            let (p, s) = r
                .packed
                .clone()
                .unwrap_or_else(|| ((0..n as u32).collect(), vec![0; n]));
            pos.extend(p);
            pos.extend(n as u32..t as u32);
            seg.extend(s);
            seg.extend(std::iter::repeat_n(u32::MAX, t - n));
        }
    }
    let b = rows.len();
    let encoder = encoder_inputs(rows, device)?;
    Ok(Batch {
        ids: Tensor::from_vec(ids, (b, t), device)?,
        encoder,
        mask: Tensor::from_vec(mask, (b, t - 1), device)?,
        valid: Tensor::from_vec(valid, (b, t.saturating_sub(1)), device)?,
        labels: None,
        scores: None,
        tasks: rows.iter().map(|r| r.task.unwrap_or(u32::MAX)).collect(),
        ref_logps: if cached && t > 1 {
            Some(Tensor::from_vec(refs, (b, t - 1), device)?)
        } else {
            None
        },
        packed: if packed {
            Some((
                Tensor::from_vec(pos, (b, t), device)?,
                Tensor::from_vec(seg, (b, t), device)?,
            ))
        } else {
            None
        },
        target_tokens: rows
            .iter()
            .map(|r| r.targets.iter().filter(|&&x| x).count())
            .sum(),
        input_tokens: rows
            .iter()
            .map(|r| r.input_ids.len() + r.encoder_ids.as_ref().map_or(0, Vec::len))
            .sum(),
        rows: b,
    })
}
