//! The network being trained: decoder-only or encoder-decoder (T5). Both give logits over a token
//! stream whose next-token log-probs the objectives consume — for T5 the decoder stream
//! `[decoder_start] + targets`, conditioned on the batch's encoder input — so every objective
//! (lm, sft, preference, KTO) runs on either without knowing which.
//!
//! Shapes: ids (B, T) → logits (B, T, V); T5 also takes encoder ids and mask (B, S).

use candle_core::{Result, Tensor};
use graft_models::layers::linear::Linears;
use graft_models::{Decoder, T5};

use crate::data::Batch;

pub enum Net {
    Decoder(Decoder),
    T5(T5),
}

impl Net {
    pub fn set_dropout_seed(&self, seed: u64) {
        match self {
            Net::Decoder(m) => m.set_dropout_seed(seed),
            Net::T5(m) => m.set_dropout_seed(seed),
        }
    }

    /// Logits (B, T, V) at every position of `batch.ids`.
    pub fn logits(&self, batch: &Batch, train: bool) -> Result<Tensor> {
        match (self, &batch.encoder) {
            (Net::Decoder(m), _) => match &batch.packed {
                Some((pos, seg)) => m.forward_packed(&batch.ids, pos, seg, train),
                None => m.forward(&batch.ids, None, train),
            },
            (Net::T5(m), Some((enc_ids, enc_mask))) => {
                if batch.packed.is_some() {
                    candle_core::bail!("packing is not supported for encoder-decoder models");
                }
                m.forward(enc_ids, Some(enc_mask), &batch.ids, train)
            }
            (Net::T5(_), None) => candle_core::bail!(
                "an encoder-decoder model needs rows with encoder inputs ({{\"inputs\", \"targets\"}})"
            ),
        }
    }

    pub fn linears(&mut self) -> &mut dyn Linears {
        match self {
            Net::Decoder(m) => m,
            Net::T5(m) => m,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Net::Decoder(m) => m.cfg.vocab_size,
            Net::T5(m) => m.cfg.vocab_size,
        }
    }
}

impl From<Decoder> for Net {
    fn from(m: Decoder) -> Self {
        Net::Decoder(m)
    }
}

impl From<T5> for Net {
    fn from(m: T5) -> Self {
        Net::T5(m)
    }
}
