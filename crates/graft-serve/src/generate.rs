//! Autoregressive decoding of any model over its caller-owned decoding state (the KV cache; for
//! seq2seq also the encoder states): one prefill of the prompt, then one position per step, so
//! decoding is linear in the number of new tokens, not quadratic.

use candle_core::{Device, Result};
use graft_models::Model;

use crate::sampling::Sampler;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    /// Decoding stops after any of these (it is included in the output, as transformers does).
    pub eos_token_ids: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Eos,
    MaxNewTokens,
    /// The callback asked to stop.
    Callback,
}

impl StopReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Eos => "eos",
            Self::MaxNewTokens => "length",
            Self::Callback => "stop",
        }
    }
}

/// Generates after `prompt` — for an encoder-decoder model, from its decoder start token with
/// `prompt` as the encoder input (the start token is not part of the output) — calling
/// `on_token` with each new token; `on_token` returns false to stop.
pub fn generate(
    model: &Model,
    prompt: &[u32],
    opts: &GenerateOptions,
    device: &Device,
    on_token: impl FnMut(u32) -> bool + Send,
) -> Result<(Vec<u32>, StopReason)> {
    // A decoding step is hundreds of small parallel products. Run from a pool thread, each one
    // starts on the caller's share at once; from outside the pool, each would be handed over and
    // the caller put to sleep and woken again (two context switches per product).
    rayon::scope(|_| decode(model, prompt, opts, device, on_token))
}

pub(crate) fn decode(
    model: &Model,
    prompt: &[u32],
    opts: &GenerateOptions,
    device: &Device,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<(Vec<u32>, StopReason)> {
    let mut sampler = Sampler::new(opts.temperature, opts.top_p, opts.seed);
    let (mut state, mut logits) = {
        let _prompt =
            graft_models::qkernels::activations_scope(graft_models::qkernels::prompt_activations());
        model.prefill(prompt, device)?
    };
    // Decoding steps multiply quantized weights with 8-bit activations (llama.cpp's numerics);
    // the prompt too, where the prompt GEMM takes the weight's format (8-bit elsewhere would be
    // slower than one f32 GEMM).
    let _numerics =
        graft_models::qkernels::activations_scope(graft_models::qkernels::generation_activations());
    let mut out = Vec::new();
    for n in 1..=opts.max_new_tokens {
        let token = sampler.sample(&logits)?;
        out.push(token);
        if opts.eos_token_ids.contains(&token) {
            return Ok((out, StopReason::Eos));
        }
        if !on_token(token) {
            return Ok((out, StopReason::Callback));
        }
        if n < opts.max_new_tokens {
            logits = model.step(&mut state, token, device)?;
        }
    }
    Ok((out, StopReason::MaxNewTokens))
}
