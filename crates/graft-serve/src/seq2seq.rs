//! Decoding for encoder-decoder models (T5): the encoder runs once, the decoder one position per
//! step from `decoder_start_token_id` with its self-attention cache and the cross-attention k/v
//! computed once. Beam search with transformers' semantics
//! (`num_beams`, `length_penalty`, `early_stopping`; scores = summed log-probs / generated
//! length^length_penalty; 2·num_beams candidates per step so finished beams never starve the
//! running ones; the same early-stop heuristic).

use candle_core::{DType, Device, Result, Tensor, D};
use graft_models::{T5Cache, T5};

fn start_id(model: &T5) -> Result<u32> {
    model.cfg.decoder_start_token_id.ok_or_else(|| {
        candle_core::Error::Msg(
            "config.json: decoder_start_token_id is missing (T5 checkpoints use 0)".into(),
        )
    })
}

#[derive(Debug, Clone)]
pub struct BeamOptions {
    pub num_beams: usize,
    pub length_penalty: f64,
    /// transformers' `early_stopping=True`: stop once `num_beams` hypotheses are finished.
    pub early_stopping: bool,
    pub max_new_tokens: usize,
    pub eos_token_ids: Vec<u32>,
}

/// Indices of the `k` largest values, largest first (ties: lower index first).
fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Beam search for one input. Returns the best hypothesis (without the decoder start token) and
/// its length-penalised score.
pub fn beam_search(
    model: &T5,
    input: &[u32],
    opts: &BeamOptions,
    device: &Device,
) -> Result<(Vec<u32>, f32)> {
    if input.is_empty() {
        candle_core::bail!("the input is empty");
    }
    let n = opts.num_beams.max(1);
    let neg = -1.0e9f32;
    let enc = model.encode(&Tensor::new(input, device)?.unsqueeze(0)?, None, false)?;
    let enc = enc.repeat((n, 1, 1))?;
    let mut cache = T5Cache::new(model.cfg.decoder_layers());
    let start = start_id(model)?;
    let keep = 2.max(1 + opts.eos_token_ids.len()) * n;
    let max_len = 1 + opts.max_new_tokens; // decoder prompt = the start token
    let lp = opts.length_penalty as f32;

    let mut running: Vec<Vec<u32>> = vec![vec![start]; n];
    let mut running_scores: Vec<f32> = (0..n).map(|i| if i == 0 { 0.0 } else { neg }).collect();
    let mut finished: Vec<Vec<u32>> = vec![vec![start]; n];
    let mut finished_scores = vec![neg; n];
    let mut is_finished = vec![false; n];
    let mut improvable = true;
    let mut cur_len = 1usize;
    while cur_len < max_len {
        let last: Vec<u32> = running.iter().map(|r| *r.last().unwrap()).collect();
        let ids = Tensor::new(last, device)?.unsqueeze(1)?;
        let logits = model.decode(&ids, &enc, None, Some(&mut cache), false)?;
        let logp: Vec<Vec<f32>> =
            candle_nn::ops::log_softmax(&logits.squeeze(1)?.to_dtype(DType::F32)?, D::Minus1)?
                .to_vec2()?;
        let vocab = logp[0].len();
        let flat: Vec<f32> = logp
            .iter()
            .zip(&running_scores)
            .flat_map(|(row, s)| row.iter().map(move |x| x + s))
            .collect();
        let cand = top_k(&flat, keep);
        let cand_seqs: Vec<Vec<u32>> = cand
            .iter()
            .map(|&i| {
                let mut s = running[i / vocab].clone();
                s.push((i % vocab) as u32);
                s
            })
            .collect();
        let cand_scores: Vec<f32> = cand.iter().map(|&i| flat[i]).collect();
        let hits: Vec<bool> = cand_seqs
            .iter()
            .map(|s| opts.eos_token_ids.contains(s.last().unwrap()) || cur_len + 1 >= max_len)
            .collect();

        // Next running beams: the best candidates that did not finish.
        let masked: Vec<f32> = cand_scores
            .iter()
            .zip(&hits)
            .map(|(s, &h)| if h { s + neg } else { *s })
            .collect();
        let next = top_k(&masked, n);
        let beam_rows: Vec<u32> = next.iter().map(|&j| (cand[j] / vocab) as u32).collect();

        // Finished hypotheses: the old ones merged with candidates among the top n that finished.
        let all_full = is_finished.iter().all(|&f| f) && opts.early_stopping;
        let denom = ((cur_len + 1 - 1) as f32).powf(lp);
        let mut merged_seqs = finished.clone();
        let mut merged_scores = finished_scores.clone();
        let mut merged_done = is_finished.clone();
        for (j, seq) in cand_seqs.iter().enumerate() {
            let just_done = hits[j] && j < n;
            let mut s = cand_scores[j] / denom;
            if all_full {
                s += neg;
            }
            if !improvable {
                s += neg;
            }
            if !just_done {
                s += neg;
            }
            merged_seqs.push(seq.clone());
            merged_scores.push(s);
            merged_done.push(just_done);
        }
        let best = top_k(&merged_scores, n);
        finished = best.iter().map(|&i| merged_seqs[i].clone()).collect();
        finished_scores = best.iter().map(|&i| merged_scores[i]).collect();
        is_finished = best.iter().map(|&i| merged_done[i]).collect();

        running = next.iter().map(|&j| cand_seqs[j].clone()).collect();
        running_scores = next.iter().map(|&j| masked[j]).collect();
        cache
            .self_kv
            .select_rows(&Tensor::new(beam_rows, device)?)?;
        cur_len += 1;

        let best_running = running_scores[0] / ((cur_len - 1) as f32).powf(lp);
        let worst = finished_scores
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min);
        improvable = improvable
            && is_finished
                .iter()
                .any(|&f| best_running > if f { worst } else { neg });
        let open = !(is_finished.iter().all(|&f| f) && opts.early_stopping);
        if !(improvable && open && !hits.iter().all(|&h| h)) {
            break;
        }
    }
    Ok((finished[0][1..].to_vec(), finished_scores[0]))
}
