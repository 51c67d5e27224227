//! The model side of lm-eval's requests, as its HF backend (`models/huggingface.py` `HFLM`,
//! `api/model.py` `TemplateLM`, lm_eval 0.4) computes them:
//! - `loglikelihood(ctx, cont)`: trailing whitespace of the context moves to the continuation;
//!   context + continuation are encoded whole and split at the context's own token count; the
//!   input (ctx + cont)[−(L+1):][:−1] is left-truncated to the model length L; the continuation's
//!   log-probs are summed and `is_greedy` says whether each was the argmax. Choices of one context
//!   share one prefill of the context through the KV cache when nothing is truncated.
//! - `loglikelihood_rolling` (batch.rs, many texts at once): the token list (BOS included when the tokenizer adds it) in
//!   disjoint windows of L predicted tokens, each conditioned on the L tokens before it, the first
//!   on the prefix token (BOS, else EOS).
//! - `generate_until(ctx, until, max_gen_toks)`: greedy; the context left-truncated to
//!   L − max_gen_toks; stops at an EOS id or once the decoded text holds a stop string (the EOS
//!   token's text is one); the text is decoded without special tokens and cut at each stop.
//!
//! Shapes: ids (1, T) → logits (1, T, V); a continuation's log-probs (C).

use candle_core::{DType, Device, IndexOp, Tensor, D};
use graft_models::{Decoder, KvCache, Model, Tokenizer};
use graft_serve::generate::GenerateOptions;
use graft_serve::generate_batch_until;

use crate::EvalError;

pub struct Lm<'a> {
    /// Decoder-only, or encoder-decoder (seq2seq.rs).
    pub model: &'a Model,
    pub tokenizer: &'a Tokenizer,
    /// The model length L (`max_position_embeddings`, as lm-eval's `resolve_max_length`).
    pub max_length: usize,
    /// BOS if the tokenizer has one, else EOS (lm-eval's `prefix_token_id`).
    pub prefix_token: u32,
    pub prefix_text: String,
    pub eos_ids: Vec<u32>,
    /// The EOS token's text, always a stop sequence.
    pub eot_text: String,
    pub device: Device,
}

type Res<T> = Result<T, EvalError>;

/// Generations decoded together by `generate_until_batch`.
pub const GENERATION_BATCH: usize = 16;

impl<'a> Lm<'a> {
    /// The settings lm-eval's HF backend derives from the model: L from the config
    /// (`n_positions`, `max_position_embeddings`, `n_ctx`, else 2048), the prefix token (BOS,
    /// else EOS), the EOS token (`tokenizer.eos_token`) and the generation EOS ids.
    pub fn new(source: &'a graft_models::ModelSource, model: &'a Model) -> Res<Self> {
        let tokenizer = source.tokenizer()?;
        let c = &source.config_json;
        // Then the tokenizer's `model_max_length` (T5: 512), as lm-eval's resolve_max_length.
        let tokenizer_max = std::fs::read_to_string(source.path.join("tokenizer_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["model_max_length"].as_f64())
            .filter(|&m| m > 0.0 && m < 1e12)
            .map(|m| m as u64);
        let max_length = ["n_positions", "max_position_embeddings", "n_ctx"]
            .iter()
            .find_map(|k| c.get(*k).and_then(serde_json::Value::as_u64))
            .or(tokenizer_max)
            .unwrap_or(2048) as usize;
        let (prefix_token, prefix_text) = match (tokenizer.bos_id, tokenizer.eos_id) {
            (Some(b), _) => (b, tokenizer.bos_token.clone().unwrap_or_default()),
            (None, Some(e)) => (e, tokenizer.eos_token.clone().unwrap_or_default()),
            _ => {
                return Err(EvalError::Request(
                    "the tokenizer has neither a BOS nor an EOS token to start windows with".into(),
                ))
            }
        };
        let mut eos_ids = source.generation.eos_token_ids.clone();
        eos_ids.extend(tokenizer.eos_id.filter(|e| !eos_ids.contains(e)));
        Ok(Self {
            model,
            tokenizer,
            max_length,
            prefix_token,
            prefix_text,
            eos_ids,
            eot_text: tokenizer.eos_token.clone().unwrap_or_default(),
            device: Device::Cpu,
        })
    }

    /// `tok_encode`: the tokenizer's own special tokens, unless the text already starts with the
    /// prefix token's text.
    pub fn tok_encode(&self, text: &str) -> Res<Vec<u32>> {
        let add = self.prefix_text.is_empty() || !text.starts_with(&self.prefix_text);
        Ok(self.tokenizer.encode(text, add)?)
    }

    /// `_encode_pair`: (context tokens, continuation tokens).
    pub fn encode_pair(&self, ctx: &str, cont: &str) -> Res<(Vec<u32>, Vec<u32>)> {
        if let Model::Seq2Seq(_) = self.model {
            return crate::seq2seq::encode_pair(self, ctx, cont);
        }
        if ctx.is_empty() {
            let c = self.tokenizer.encode(cont, false)?;
            return Ok(match c.first() == Some(&self.prefix_token) {
                true => (vec![self.prefix_token], c[1..].to_vec()),
                false => (vec![self.prefix_token], c),
            });
        }
        let trimmed = ctx.trim_end();
        let (ctx, cont) = (trimmed, format!("{}{cont}", &ctx[trimmed.len()..]));
        let whole = self.tok_encode(&format!("{ctx}{cont}"))?;
        let ctx_enc = self.tok_encode(ctx)?;
        let cont_enc = whole.get(ctx_enc.len()..).unwrap_or_default().to_vec();
        Ok((ctx_enc, cont_enc))
    }

    fn decoder(&self) -> Res<&'a Decoder> {
        match self.model {
            Model::Decoder(d) => Ok(d),
            Model::Seq2Seq(_) => Err(EvalError::Request(
                "this request type needs a decoder-only model".into(),
            )),
        }
    }

    fn log_probs(&self, ids: &[u32], cache: Option<&mut KvCache>) -> Res<Tensor> {
        let input = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        let logits = self
            .decoder()?
            .forward(&input, cache, false)?
            .to_dtype(DType::F32)?;
        Ok(candle_nn::ops::log_softmax(&logits.i(0)?, D::Minus1)?)
    }

    /// Σ log p and greedy-ness of `cont` from log-probs rows (C, V) predicting its tokens.
    pub(crate) fn gather(lp: &Tensor, cont: &[u32]) -> Res<(f64, bool)> {
        let ids = Tensor::new(cont, lp.device())?.unsqueeze(1)?;
        let picked: Vec<f32> = lp.gather(&ids, 1)?.squeeze(1)?.to_vec1()?;
        let greedy: Vec<u32> = lp.argmax(D::Minus1)?.to_vec1()?;
        let sum = picked.iter().map(|&x| x as f64).sum();
        Ok((sum, greedy.as_slice() == cont))
    }

    /// One (context, continuation) token pair, as `_loglikelihood_tokens`.
    pub fn score_tokens(&self, ctx: &[u32], cont: &[u32]) -> Res<(f64, bool)> {
        if let Model::Seq2Seq(t5) = self.model {
            return Ok(crate::seq2seq::loglikelihoods(self, t5, ctx, &[cont.to_vec()])?[0]);
        }
        let inp = self.model_input(ctx, cont)?;
        let lp = self.log_probs(&inp, None)?;
        let n = inp.len();
        Self::gather(&lp.narrow(0, n - cont.len(), cont.len())?, cont)
    }

    /// A decoder request's model input: (ctx + cont)[−(L+1):][:−1], lm-eval's left truncation.
    pub(crate) fn model_input(&self, ctx: &[u32], cont: &[u32]) -> Res<Vec<u32>> {
        if ctx.is_empty() || cont.is_empty() || cont.len() > self.max_length {
            return Err(EvalError::Request(format!(
                "a request needs a context and a continuation of 1..={} tokens (got {} and {})",
                self.max_length,
                ctx.len(),
                cont.len()
            )));
        }
        let all: Vec<u32> = ctx.iter().chain(cont).copied().collect();
        let start = all.len().saturating_sub(self.max_length + 1);
        Ok(all[start..all.len() - 1].to_vec())
    }

    /// The continuations' log-likelihoods after one context (multiple choice).
    pub fn loglikelihoods(&self, ctx: &str, conts: &[String]) -> Res<Vec<(f64, bool)>> {
        let pairs = conts
            .iter()
            .map(|c| self.encode_pair(ctx, c))
            .collect::<Res<Vec<_>>>()?;
        if let Model::Seq2Seq(t5) = self.model {
            let conts: Vec<Vec<u32>> = pairs.iter().map(|p| p.1.clone()).collect();
            let ctx = pairs.first().map(|p| p.0.clone()).unwrap_or_default();
            return crate::seq2seq::loglikelihoods(self, t5, &ctx, &conts);
        }
        let shared = pairs.windows(2).all(|w| w[0].0 == w[1].0);
        let fits = pairs
            .iter()
            .all(|(c, k)| !k.is_empty() && c.len() + k.len() <= self.max_length + 1);
        if !(shared && fits) || pairs.is_empty() {
            return pairs.iter().map(|(c, k)| self.score_tokens(c, k)).collect();
        }
        // One prefill of the shared context; each continuation from a copy of its cache.
        let ctx_enc = &pairs[0].0;
        let mut cache = self.decoder()?.new_cache();
        let prefill = self.log_probs(ctx_enc, Some(&mut cache))?;
        let first = prefill.narrow(0, ctx_enc.len() - 1, 1)?;
        pairs
            .iter()
            .map(|(_, cont)| {
                let lp = match cont.len() {
                    1 => first.clone(),
                    n => {
                        let mut c = cache.clone();
                        let rest = self.log_probs(&cont[..n - 1], Some(&mut c))?;
                        Tensor::cat(&[&first, &rest], 0)?
                    }
                };
                Self::gather(&lp, cont)
            })
            .collect()
    }

    /// Greedy continuation of `ctx` until a stop string, an EOS id or `max_gen_toks` tokens.
    pub fn generate_until(&self, ctx: &str, until: &[String], max_gen_toks: usize) -> Res<String> {
        Ok(self
            .generate_until_batch(&[ctx], until, max_gen_toks)?
            .remove(0))
    }

    /// [`Self::generate_until`] of each context, decoded together in batches of
    /// [`GENERATION_BATCH`] (longest first, so that a batch pads little).
    pub fn generate_until_batch(
        &self,
        ctxs: &[&str],
        until: &[String],
        max_gen_toks: usize,
    ) -> Res<Vec<String>> {
        let mut stops: Vec<String> = until.iter().filter(|s| !s.is_empty()).cloned().collect();
        if !self.eot_text.is_empty() && !stops.contains(&self.eot_text) {
            stops.push(self.eot_text.clone());
        }
        let reqs = ctxs
            .iter()
            .map(|c| self.generation_request(c, max_gen_toks))
            .collect::<Res<Vec<_>>>()?;
        let mut order: Vec<usize> = (0..reqs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(reqs[i].0.len()));
        let mut texts = vec![String::new(); reqs.len()];
        for chunk in order.chunks(GENERATION_BATCH) {
            let prompts: Vec<&[u32]> = chunk.iter().map(|&i| &reqs[i].0[..]).collect();
            let opts: Vec<GenerateOptions> = chunk.iter().map(|&i| reqs[i].1.clone()).collect();
            let out =
                generate_batch_until(self.model, &prompts, &opts, &self.device, |_, so_far| {
                    let text = self.tokenizer.decode(so_far, false).unwrap_or_default();
                    stops.iter().any(|s| text.contains(s.as_str()))
                })?;
            for (&i, (ids, _)) in chunk.iter().zip(out) {
                let mut text = self.tokenizer.decode(&ids, true)?;
                for s in &stops {
                    if let Some(at) = text.find(s.as_str()) {
                        text.truncate(at);
                    }
                }
                texts[i] = text;
            }
        }
        Ok(texts)
    }

    /// The prompt ids and greedy options of one generation request.
    fn generation_request(
        &self,
        ctx: &str,
        max_gen_toks: usize,
    ) -> Res<(Vec<u32>, GenerateOptions)> {
        Ok(match self.model {
            Model::Seq2Seq(t5) => crate::seq2seq::generation_request(self, t5, ctx, max_gen_toks)?,
            Model::Decoder(_) => {
                let ids = self.tokenizer.encode(ctx, true)?;
                let keep = self.max_length.saturating_sub(max_gen_toks).max(1);
                let ids = ids[ids.len().saturating_sub(keep)..].to_vec();
                (ids, self.greedy(max_gen_toks, self.eos_ids.clone()))
            }
        })
    }

    /// Greedy decoding options: at most `max_new_tokens`, stopping at `eos`.
    pub fn greedy(&self, max_new_tokens: usize, eos: Vec<u32>) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            eos_token_ids: eos,
        }
    }
}

/// lm-eval's rolling windows (`utils.get_rolling_token_windows` with context_len 1, then
/// `make_disjoint_window`): (context, predicted) token lists covering every token once.
pub fn rolling_windows(tokens: &[u32], max: usize, prefix: u32) -> Vec<(Vec<u32>, Vec<u32>)> {
    if tokens.is_empty() || max == 0 {
        return Vec::new();
    }
    let first = max.min(tokens.len());
    let mut ctx = vec![prefix];
    ctx.extend_from_slice(&tokens[..first - 1]);
    let mut out = vec![(ctx, tokens[..first].to_vec())];
    let mut predicted = first;
    while predicted < tokens.len() {
        let wlen = (tokens.len() - predicted).min(max);
        let end = predicted + wlen;
        out.push((
            tokens[end.saturating_sub(max + 1)..end - 1].to_vec(),
            tokens[end - wlen..end].to_vec(),
        ));
        predicted += wlen;
    }
    out.into_iter()
        .map(|(a, b)| {
            let keep = a.len() - (b.len() - 1).min(a.len());
            (a[..keep].to_vec(), b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rolling_windows_match_lm_eval() {
        // lm_eval.utils.get_rolling_token_windows(list(range(10, 20)), prefix_token=1,
        // max_seq_len=4, context_len=1), then make_disjoint_window.
        let windows = super::rolling_windows(&(10..20).collect::<Vec<u32>>(), 4, 1);
        assert_eq!(
            windows,
            vec![
                (vec![1], vec![10, 11, 12, 13]),
                (vec![13], vec![14, 15, 16, 17]),
                (vec![15, 16, 17], vec![18, 19]),
            ]
        );
    }
}
