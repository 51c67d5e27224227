//! Batching by length for decoder requests without a shared context (rolling windows): the
//! requests are sorted by input length and run in right-padded batches of at most
//! `TOKEN_BUDGET` tokens — under a causal mask, padding after a row changes nothing before it.
//! Logits are formed only at the positions a request scores (its hidden rows times the head),
//! never (B, T, V) for the whole batch. Encoder-decoder models score one request at a time.
//!
//! Shapes: ids (B, T) → hidden (B, T, H); a request's rows (C, H) → log-probs (C, V).

use candle_core::{DType, IndexOp, Tensor, D};

use crate::harness::Lm;
use crate::EvalError;

/// Tokens per batch (B × longest input).
const TOKEN_BUDGET: usize = 2048;

impl Lm<'_> {
    /// `score_tokens` for many (context, continuation) pairs, in their order.
    pub fn score_many(&self, reqs: &[(Vec<u32>, Vec<u32>)]) -> Result<Vec<(f64, bool)>, EvalError> {
        let graft_models::Model::Decoder(model) = self.model else {
            return reqs.iter().map(|(c, k)| self.score_tokens(c, k)).collect();
        };
        let inputs = reqs
            .iter()
            .map(|(ctx, cont)| self.model_input(ctx, cont))
            .collect::<Result<Vec<_>, _>>()?;
        let mut order: Vec<usize> = (0..reqs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(inputs[i].len()));
        let mut out = vec![(0.0, false); reqs.len()];
        let mut at = 0;
        while at < order.len() {
            let longest = inputs[order[at]].len();
            let n = (TOKEN_BUDGET / longest.max(1)).max(1).min(order.len() - at);
            let batch = &order[at..at + n];
            let ids: Vec<u32> = batch
                .iter()
                .flat_map(|&i| {
                    let mut row = inputs[i].clone();
                    row.resize(longest, 0);
                    row
                })
                .collect();
            let ids = Tensor::from_vec(ids, (n, longest), &self.device)?;
            let hidden = model.hidden_states(&ids, None, false)?;
            for (b, &i) in batch.iter().enumerate() {
                let (len, c) = (inputs[i].len(), reqs[i].1.len());
                let rows = hidden.i((b, len - c..len))?;
                let mut logits = model.head_logits(&rows)?.to_dtype(DType::F32)?;
                if let Some(cap) = model.cfg.final_softcap {
                    logits = ((logits / cap)?.tanh()? * cap)?;
                }
                let lp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
                out[i] = Lm::gather(&lp, &reqs[i].1)?;
            }
            at += n;
        }
        Ok(out)
    }

    /// Σ log p of each text over its rolling windows, every window of every text batched.
    pub fn loglikelihood_rolling_many(&self, texts: &[String]) -> Result<Vec<f64>, EvalError> {
        let mut reqs = Vec::new();
        let mut owner = Vec::new();
        for (d, text) in texts.iter().enumerate() {
            let tokens = self.tok_encode(text)?;
            for w in crate::harness::rolling_windows(&tokens, self.max_length, self.prefix_token) {
                reqs.push(w);
                owner.push(d);
            }
        }
        let scores = self.score_many(&reqs)?;
        let mut totals = vec![0.0; texts.len()];
        for (d, (ll, _)) in owner.into_iter().zip(scores) {
            totals[d] += ll;
        }
        Ok(totals)
    }
}
