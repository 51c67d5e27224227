//! lm-eval's requests for encoder-decoder models (its HF backend with
//! `AutoModelForSeq2SeqLM`): the context — encoded with the tokenizer's special tokens (T5 appends
//! EOS) and left-truncated to L — is the encoder input; the continuation — encoded without
//! special tokens — is the decoder's labels, teacher-forced after `decoder_start_token_id`, its
//! log-probs summed. Choices of one context share one encoder pass. Rolling windows are scored
//! the same way (window context → encoder, predicted tokens → decoder). Generation decodes
//! greedily from the encoded context, for up to encoder length + max_gen_toks − 1 tokens (lm-eval
//! passes `max_length` = encoder length + max_gen_toks, which bounds the decoder).
//!
//! Shapes: encoder ids (1, S); decoder ids (1, C) = [start] + cont[..C−1]; log-probs (C, V).

use candle_core::{DType, IndexOp, Tensor, D};
use graft_models::T5;
use graft_serve::generate::GenerateOptions;

use crate::harness::Lm;
use crate::EvalError;

type Res<T> = Result<T, EvalError>;

/// `_encode_pair` for seq2seq: (context with special tokens, continuation without).
pub fn encode_pair(lm: &Lm, ctx: &str, cont: &str) -> Res<(Vec<u32>, Vec<u32>)> {
    if ctx.is_empty() {
        return Ok((vec![lm.prefix_token], lm.tokenizer.encode(cont, false)?));
    }
    let trimmed = ctx.trim_end();
    let (ctx, cont) = (trimmed, format!("{}{cont}", &ctx[trimmed.len()..]));
    Ok((lm.tok_encode(ctx)?, lm.tokenizer.encode(&cont, false)?))
}

fn encoder_input(lm: &Lm, ctx: &[u32]) -> Res<Tensor> {
    let ctx = &ctx[ctx.len().saturating_sub(lm.max_length)..];
    Ok(Tensor::new(ctx, &lm.device)?.unsqueeze(0)?)
}

/// Σ log p(cont | ctx) and greedy-ness for each continuation, one encoder pass.
pub fn loglikelihoods(lm: &Lm, t5: &T5, ctx: &[u32], conts: &[Vec<u32>]) -> Res<Vec<(f64, bool)>> {
    if ctx.is_empty() {
        return Err(EvalError::Request(
            "a seq2seq request needs a context".into(),
        ));
    }
    let start = t5
        .cfg
        .decoder_start_token_id
        .ok_or_else(|| EvalError::Request("config.json has no decoder_start_token_id".into()))?;
    let enc = t5.encode(&encoder_input(lm, ctx)?, None, false)?;
    conts
        .iter()
        .map(|cont| {
            if cont.is_empty() {
                return Err(EvalError::Request("an empty continuation".into()));
            }
            let cont = &cont[cont.len().saturating_sub(lm.max_length)..];
            let mut dec = vec![start];
            dec.extend_from_slice(&cont[..cont.len() - 1]);
            let dec = Tensor::new(dec.as_slice(), &lm.device)?.unsqueeze(0)?;
            let logits = t5
                .decode(&dec, &enc, None, None, false)?
                .to_dtype(DType::F32)?;
            let lp = candle_nn::ops::log_softmax(&logits.i(0)?, D::Minus1)?;
            Lm::gather(&lp, cont)
        })
        .collect()
}

/// What lm-eval's seq2seq backend decodes for `ctx`: the encoded context (left-truncated to the
/// model length) and greedy options. lm-eval asks generate() for max_length = encoder length +
/// max_gen_toks, which for an encoder-decoder bounds the decoder sequence, start token included.
pub fn generation_request(
    lm: &Lm,
    t5: &T5,
    ctx: &str,
    max_gen_toks: usize,
) -> Res<(Vec<u32>, GenerateOptions)> {
    let ids = lm.tokenizer.encode(ctx, true)?;
    let ids = ids[ids.len().saturating_sub(lm.max_length)..].to_vec();
    let max_new = (ids.len() + max_gen_toks).saturating_sub(1);
    let opts = lm.greedy(max_new, t5.cfg.eos_ids());
    Ok((ids, opts))
}
