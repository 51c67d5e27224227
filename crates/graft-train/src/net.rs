//! The network being trained: decoder-only or encoder-decoder (T5). Both give logits over a token
//! stream whose next-token log-probs the objectives consume — for T5 the decoder stream
//! `[decoder_start] + targets`, conditioned on the batch's encoder input — so every objective
//! (lm, sft, preference, KTO) runs on either without knowing which.
//!
//! Shapes: ids (B, T) → logits (B, T, V); T5 also takes encoder ids and mask (B, S).

use std::path::Path;

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use graft_models::layers::head_logprobs::head_logprobs;
use graft_models::layers::linear::Linears;
use graft_models::{next_token_logprobs, Arch, Decoder, ModelSource, T5};

use crate::data::Batch;
use crate::TrainError;

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
        graft_adapters::mtlora::set_row_tasks(&batch.tasks);
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

    /// Log-probs of each next token (B, T−1) and, when asked, the log-partition log Σ exp(logits)
    /// at each position. Decoders without logit soft-capping go through the chunked head
    /// ([`head_logprobs`]): the (B, T, V) logits are never held; the others take the full
    /// logits' log-softmax.
    pub fn token_logps(
        &self,
        batch: &Batch,
        train: bool,
        want_lse: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        graft_adapters::mtlora::set_row_tasks(&batch.tasks);
        let packed = batch.packed.as_ref().map(|(p, s)| (p, s));
        match self {
            Net::Decoder(m) if m.cfg.final_softcap.is_none() => {
                let h = m.hidden_states(&batch.ids, packed, train)?;
                return head_token_logps(&h, m.head(), &batch.ids, want_lse);
            }
            _ => {}
        }
        let logits = self.logits(batch, train)?.to_dtype(DType::F32)?;
        let lp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let logps = next_token_logprobs(&lp, &batch.ids)?;
        let lse = if want_lse {
            // log p = logit − lse, so lse = logit(target) − log p.
            Some((next_token_logprobs(&logits, &batch.ids)? - &logps)?)
        } else {
            None
        };
        Ok((logps, lse))
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

/// The model to train: all weights as variables, or a frozen base with adapter variables.
pub fn build_net(
    source: &ModelSource,
    dropout: Option<f64>,
    varmap: &VarMap,
    adapter: Option<&graft_adapters::LoraConfig>,
    dtype: DType,
    seed: u64,
) -> std::result::Result<Net, TrainError> {
    let device = Device::Cpu;
    let vars = || VarBuilder::from_varmap(varmap, dtype, &device);
    let mut net: Net = match &source.arch {
        Arch::Decoder(c) => {
            let mut config = c.clone();
            if let Some(p) = dropout {
                config.attention_dropout = p;
            }
            match adapter {
                None => Decoder::new(&config, vars())?.into(),
                Some(_) => source.build_with(&config, dtype, &device)?.into(),
            }
        }
        Arch::T5(c) => {
            // T5 has one dropout rate (embeddings, residuals, attention, FFN).
            let mut config = c.clone();
            if let Some(p) = dropout {
                config.dropout_rate = p;
            }
            match adapter {
                None => {
                    let untied = source.tensors(DType::F32)?.contains_key("lm_head.weight");
                    T5::new_with_head(&config, vars(), untied)?.into()
                }
                Some(_) => T5::new(&config, source.var_builder(dtype, &device)?)?.into(),
            }
        }
    };
    match adapter {
        None => set_vars(varmap, &source.tensors(DType::F32)?, &source.path)?,
        Some(cfg) if cfg.peft_type == graft_adapters::PeftType::Lst => {
            // Random side blocks for now; lst_init::init_side prunes the backbone into them once
            // the training rows are read.
            let Net::Decoder(backbone) = &mut net else {
                return Err(TrainError::Recipe(
                    "adapter.kind = \"lst\": supported for decoder-only models".into(),
                ));
            };
            let spec = cfg.side_spec(&backbone.cfg).map_err(TrainError::Recipe)?;
            let ladder = graft_adapters::lst::Ladder::new(&backbone.cfg, spec, varmap, seed, None)
                .map_err(|e| TrainError::Recipe(format!("adapter: {e}")))?;
            backbone.side = Some(std::sync::Arc::new(ladder));
        }
        Some(cfg) => {
            graft_adapters::init_trainable(net.linears(), cfg, varmap, seed)
                .map_err(|e| TrainError::Recipe(format!("adapter: {e}")))?;
        }
    }
    Ok(net)
}

pub fn set_vars(
    varmap: &VarMap,
    tensors: &std::collections::HashMap<String, Tensor>,
    from: &Path,
) -> std::result::Result<(), TrainError> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| TrainError::Io("varmap poisoned".into()))?;
    for (name, var) in vars.iter() {
        let t = tensors
            .get(name)
            .ok_or_else(|| TrainError::Io(format!("{}: no tensor `{name}`", from.display())))?;
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// Next-token log-probs (B, T−1) (and log-partitions) from final hidden states (B, T, H) through
/// the chunked head.
fn head_token_logps(
    h: &Tensor,
    head: &Tensor,
    ids: &Tensor,
    want_lse: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let (b, t, hid) = h.dims3()?;
    if t < 2 {
        candle_core::bail!("rows need two or more tokens");
    }
    let h = h.narrow(1, 0, t - 1)?.reshape((b * (t - 1), hid))?;
    let targets: Vec<u32> = ids.narrow(1, 1, t - 1)?.flatten_all()?.to_vec1()?;
    let (lp, lse) = head_logprobs(&h, head, &targets)?;
    let lse = want_lse.then(|| lse.reshape((b, t - 1))).transpose()?;
    Ok((lp.reshape((b, t - 1))?, lse))
}
