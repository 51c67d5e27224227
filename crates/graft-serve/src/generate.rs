//! Autoregressive decoding with the caller-owned KV cache: one prefill of the prompt, then one
//! position per step, so decoding is linear in the number of new tokens, not quadratic.

use candle_core::{Device, Result, Tensor};
use graft_models::Decoder;

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

/// Generates after `prompt`, calling `on_token` with each new token; `on_token` returns false to stop.
pub fn generate(
    model: &Decoder,
    prompt: &[u32],
    opts: &GenerateOptions,
    device: &Device,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<(Vec<u32>, StopReason)> {
    if prompt.is_empty() {
        candle_core::bail!("the prompt is empty: nothing to continue");
    }
    let mut sampler = Sampler::new(opts.temperature, opts.top_p, opts.seed);
    let mut cache = model.new_cache();
    let mut out = Vec::new();
    let mut input = Tensor::new(prompt, device)?.unsqueeze(0)?;
    for _ in 0..opts.max_new_tokens {
        let logits = model.forward(&input, Some(&mut cache), false)?;
        let last = logits.get(0)?.get(logits.dim(1)? - 1)?;
        let token = sampler.sample(&last)?;
        out.push(token);
        if opts.eos_token_ids.contains(&token) {
            return Ok((out, StopReason::Eos));
        }
        if !on_token(token) {
            return Ok((out, StopReason::Callback));
        }
        input = Tensor::new(&[token], device)?.unsqueeze(0)?;
    }
    Ok((out, StopReason::MaxNewTokens))
}
