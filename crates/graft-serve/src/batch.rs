//! Batched decoding: several sequences of a decoder-only model advance one token per step in one
//! forward (each weight read once per step for all of them), each with its own sampler, seed,
//! stopping rule and length; a finished sequence leaves the batch. Sequences of the same prompt
//! share one prefill. Encoder-decoder models decode their sequences one at a time.
//! Shapes: logits (B, V) for the B sequences still running.

use candle_core::{Device, IndexOp, Result, Tensor};
use graft_models::Model;

use crate::generate::{decode, GenerateOptions, StopReason};
use crate::sampling::Sampler;

/// Generates a continuation of `prompts[i]` with `opts[i]` for every i, as [`crate::generate`]
/// would one by one (each sequence's tokens depend only on its own prompt and options).
pub fn generate_batch(
    model: &Model,
    prompts: &[&[u32]],
    opts: &[GenerateOptions],
    device: &Device,
) -> Result<Vec<(Vec<u32>, StopReason)>> {
    generate_batch_until(model, prompts, opts, device, |_, _| false)
}

/// [`generate_batch`] with a stopping rule: `stop(i, tokens)` is asked after each new token of
/// sequence i that is not EOS (as `generate`'s callback, whose `false` is `stop`'s `true`).
pub fn generate_batch_until(
    model: &Model,
    prompts: &[&[u32]],
    opts: &[GenerateOptions],
    device: &Device,
    mut stop: impl FnMut(usize, &[u32]) -> bool + Send,
) -> Result<Vec<(Vec<u32>, StopReason)>> {
    if prompts.len() != opts.len() {
        candle_core::bail!("{} prompts, {} option sets", prompts.len(), opts.len());
    }
    rayon::scope(|_| {
        if model.as_decoder().is_none() || prompts.len() == 1 {
            return prompts
                .iter()
                .zip(opts)
                .enumerate()
                .map(|(i, (p, o))| {
                    let mut so_far = Vec::new();
                    decode(model, p, o, device, |t| {
                        so_far.push(t);
                        !stop(i, &so_far)
                    })
                })
                .collect();
        }
        decode_batch(model, prompts, opts, device, &mut stop)
    })
}

/// The batch's first state and logits: each distinct prompt is prefilled once, and sequences of
/// the same prompt get copies of its cache row.
fn prefill(
    model: &Model,
    prompts: &[&[u32]],
    device: &Device,
) -> Result<(graft_models::BatchState, Tensor)> {
    let mut distinct: Vec<&[u32]> = Vec::new();
    let rows: Vec<usize> = prompts
        .iter()
        .map(|p| match distinct.iter().position(|d| d == p) {
            Some(r) => r,
            None => {
                distinct.push(p);
                distinct.len() - 1
            }
        })
        .collect();
    let (mut state, logits) = model.prefill_batch(&distinct, device)?;
    if distinct.len() == prompts.len() {
        return Ok((state, logits));
    }
    state.keep_rows(&rows, device)?;
    let index: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    Ok((state, logits.index_select(&Tensor::new(index, device)?, 0)?))
}

fn decode_batch(
    model: &Model,
    prompts: &[&[u32]],
    opts: &[GenerateOptions],
    device: &Device,
    stop: &mut dyn FnMut(usize, &[u32]) -> bool,
) -> Result<Vec<(Vec<u32>, StopReason)>> {
    let n = prompts.len();
    let mut samplers: Vec<Sampler> = opts
        .iter()
        .map(|o| Sampler::new(o.temperature, o.top_p, o.seed))
        .collect();
    let mut out: Vec<(Vec<u32>, StopReason)> = vec![(Vec::new(), StopReason::MaxNewTokens); n];
    // live[r] = the sequence in batch row r.
    let mut live: Vec<usize> = (0..n).filter(|&s| opts[s].max_new_tokens > 0).collect();
    if live.is_empty() {
        return Ok(out);
    }
    let (mut state, mut logits) = {
        let _prompt =
            graft_models::qkernels::activations_scope(graft_models::qkernels::prompt_activations());
        prefill(model, prompts, device)?
    };
    if live.len() < n {
        state.keep_rows(&live, device)?;
        let index: Vec<u32> = live.iter().map(|&s| s as u32).collect();
        logits = logits.index_select(&Tensor::new(index, device)?, 0)?;
    }
    // Steps with 8-bit activations, as `generate`'s.
    let _numerics =
        graft_models::qkernels::activations_scope(graft_models::qkernels::generation_activations());
    loop {
        let (mut keep, mut tokens) = (Vec::new(), Vec::new());
        for (row, &s) in live.iter().enumerate() {
            let token = samplers[s].sample(&logits.i(row)?)?;
            out[s].0.push(token);
            if opts[s].eos_token_ids.contains(&token) {
                out[s].1 = StopReason::Eos;
            } else if stop(s, &out[s].0) {
                out[s].1 = StopReason::Callback;
            } else if out[s].0.len() < opts[s].max_new_tokens {
                keep.push(row);
                tokens.push(token);
            }
        }
        if keep.is_empty() {
            return Ok(out);
        }
        if keep.len() < live.len() {
            state.keep_rows(&keep, device)?;
            live = keep.iter().map(|&r| live[r]).collect();
        }
        logits = model.step_batch(&mut state, &tokens, device)?;
    }
}
