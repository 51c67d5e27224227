//! T5 family (transformers' `T5ForConditionalGeneration`, `MT5ForConditionalGeneration`): T5 v1.0
//! (ReLU FFN, lm_head tied to `shared`, decoder output scaled by d_model^-0.5), T5 v1.1 / Flan-T5 /
//! mT5 (gated-GELU, untied head) and UL2 (gated-SiLU). Encoder and decoder are RMS-pre-norm stacks;
//! attention has no 1/√d scaling and no rotary positions: block 0 of each stack owns a learned
//! bias per (relative-position bucket, head) that every block of that stack adds to its scores.
//!
//! Shapes: B batch, S encoder positions, T new decoder positions, P cached decoder positions,
//! H heads, D d_kv, C d_model, F d_ff, V vocab.
//! input_ids (B, S) → encoder states (B, S, C); decoder_input_ids (B, T) → logits (B, T, V).

use std::sync::Mutex;

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use rand::{rngs::StdRng, SeedableRng};
use serde::Deserialize;
use serde_json::Value;

use crate::config::NormKind;
use crate::layers::attention::dropout;
use crate::layers::linear::{matmul_t, Linear};
use crate::layers::norm::RmsNorm;
pub use crate::layers::relative_attention::{relative_bucket, T5Cache};
use crate::layers::relative_attention::{AttnCache, T5Attention};

/// `config.json` of model_type `t5` / `mt5`, HF names and defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    pub model_type: String,
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    #[serde(default)]
    pub num_decoder_layers: Option<usize>,
    pub num_heads: usize,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "default_dropout")]
    pub dropout_rate: f64,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_ffn")]
    pub feed_forward_proj: String,
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    /// Written by transformers ≥ 5; older configs imply it from `tie_word_embeddings`.
    #[serde(default)]
    pub scale_decoder_outputs: Option<bool>,
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<Value>,
}

fn default_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_dropout() -> f64 {
    0.1
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ffn() -> String {
    "relu".into()
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum T5Act {
    Relu,
    /// `gelu_new` (tanh approximation); what "gated-gelu" means for T5.
    GeluTanh,
    Gelu,
    Silu,
}

impl T5Config {
    pub fn decoder_layers(&self) -> usize {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    /// `feed_forward_proj` = `{act}` or `gated-{act}`, as transformers parses it.
    pub fn ffn(&self) -> std::result::Result<(bool, T5Act), String> {
        let parts: Vec<&str> = self.feed_forward_proj.split('-').collect();
        let (gated, name) = match parts.as_slice() {
            ["gated", "gelu"] => (true, "gelu_new"),
            ["gated", act] => (true, *act),
            [act] => (false, *act),
            _ => {
                return Err(format!(
                    "feed_forward_proj: `{}` is not `{{act}}` or `gated-{{act}}`",
                    self.feed_forward_proj
                ))
            }
        };
        let act = match name {
            "relu" => T5Act::Relu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => T5Act::GeluTanh,
            "gelu" => T5Act::Gelu,
            "silu" | "swish" => T5Act::Silu,
            other => {
                return Err(format!(
                    "feed_forward_proj: activation `{other}` is not supported"
                ))
            }
        };
        Ok((gated, act))
    }

    /// Whether the decoder output is scaled by d_model^-0.5 before the head: T5 v1.0 (tied) does
    /// it; transformers 5 never does it for mT5.
    pub fn scales_output(&self) -> bool {
        self.model_type != "mt5"
            && self
                .scale_decoder_outputs
                .unwrap_or(self.tie_word_embeddings != Some(false))
    }

    pub fn eos_ids(&self) -> Vec<u32> {
        match &self.eos_token_id {
            Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_u64)
                .map(|x| x as u32)
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct T5Ff {
    pub wi: Option<Linear>,
    pub wi_0: Option<Linear>,
    pub wi_1: Option<Linear>,
    pub wo: Linear,
    act: T5Act,
    dropout: f64,
}

impl T5Ff {
    fn new(vb: VarBuilder, cfg: &T5Config, gated: bool, act: T5Act) -> Result<Self> {
        let (c, f) = (cfg.d_model, cfg.d_ff);
        let lin = |n: &str| Linear::new(vb.pp(n), c, f, false);
        Ok(Self {
            wi: if gated { None } else { Some(lin("wi")?) },
            wi_0: if gated { Some(lin("wi_0")?) } else { None },
            wi_1: if gated { Some(lin("wi_1")?) } else { None },
            wo: Linear::new(vb.pp("wo"), f, c, false)?,
            act,
            dropout: cfg.dropout_rate,
        })
    }

    fn forward(&self, x: &Tensor, rng: Option<&Mutex<StdRng>>) -> Result<Tensor> {
        let act = |h: Tensor| match self.act {
            T5Act::Relu => h.relu(),
            T5Act::GeluTanh => h.gelu(),
            T5Act::Gelu => h.gelu_erf(),
            T5Act::Silu => h.silu(),
        };
        let mut h = match (&self.wi, &self.wi_0, &self.wi_1) {
            (Some(wi), _, _) => act(wi.forward(x, rng)?)?,
            (None, Some(w0), Some(w1)) => (act(w0.forward(x, rng)?)? * w1.forward(x, rng)?)?,
            _ => candle_core::bail!("t5 ffn: missing wi or wi_0/wi_1"),
        };
        if let (Some(rng), true) = (rng, self.dropout > 0.0) {
            h = dropout(&h, self.dropout, rng)?;
        }
        self.wo.forward(&h, rng)
    }
}

/// One block: self-attention, cross-attention (decoder only), FFN; each `x + drop(f(norm(x)))`.
#[derive(Debug, Clone)]
pub struct T5Block {
    pub self_attn: T5Attention,
    pub self_norm: RmsNorm,
    pub cross: Option<(T5Attention, RmsNorm)>,
    pub ff: T5Ff,
    pub ff_norm: RmsNorm,
}

impl T5Block {
    fn new(vb: VarBuilder, cfg: &T5Config, decoder: bool, first: bool) -> Result<Self> {
        let (gated, act) = cfg.ffn().map_err(candle_core::Error::Msg)?;
        let norm = |vb: VarBuilder| {
            RmsNorm::new(vb, cfg.d_model, cfg.layer_norm_epsilon, NormKind::Plain)
                .map(RmsNorm::composed)
        };
        let l = vb.pp("layer");
        let ff_index = if decoder { 2 } else { 1 };
        Ok(Self {
            self_attn: T5Attention::new(l.pp(0).pp("SelfAttention"), cfg, first)?,
            self_norm: norm(l.pp(0).pp("layer_norm"))?,
            cross: if decoder {
                Some((
                    T5Attention::new(l.pp(1).pp("EncDecAttention"), cfg, false)?,
                    norm(l.pp(1).pp("layer_norm"))?,
                ))
            } else {
                None
            },
            ff: T5Ff::new(l.pp(ff_index).pp("DenseReluDense"), cfg, gated, act)?,
            ff_norm: norm(l.pp(ff_index).pp("layer_norm"))?,
        })
    }
}

#[derive(Debug)]
pub struct T5 {
    pub cfg: T5Config,
    /// (V, C), the input embedding of both stacks (and the head when tied).
    pub shared: Tensor,
    pub encoder: Vec<T5Block>,
    pub encoder_norm: RmsNorm,
    pub decoder: Vec<T5Block>,
    pub decoder_norm: RmsNorm,
    /// (V, C) when the checkpoint has its own `lm_head.weight`.
    pub lm_head: Option<Tensor>,
    dropout_rng: Mutex<StdRng>,
}

fn residual_dropout(x: Tensor, p: f64, rng: Option<&Mutex<StdRng>>) -> Result<Tensor> {
    match rng {
        Some(rng) if p > 0.0 => dropout(&x, p, rng),
        _ => Ok(x),
    }
}

impl T5 {
    /// Builds the model over `vb`; the head is untied when `vb` holds `lm_head.weight`.
    pub fn new(cfg: &T5Config, vb: VarBuilder) -> Result<Self> {
        let untied = vb.contains_tensor("lm_head.weight");
        Self::new_with_head(cfg, vb, untied)
    }

    /// As [`Self::new`] with the head's tying stated (a VarBuilder over fresh variables cannot
    /// tell).
    pub fn new_with_head(cfg: &T5Config, vb: VarBuilder, untied: bool) -> Result<Self> {
        let shared = vb.get((cfg.vocab_size, cfg.d_model), "shared.weight")?;
        let stack = |name: &str, n: usize, decoder: bool| -> Result<Vec<T5Block>> {
            (0..n)
                .map(|i| T5Block::new(vb.pp(name).pp("block").pp(i), cfg, decoder, i == 0))
                .collect()
        };
        let norm = |name: &str| {
            RmsNorm::new(
                vb.pp(name).pp("final_layer_norm"),
                cfg.d_model,
                cfg.layer_norm_epsilon,
                NormKind::Plain,
            )
            .map(RmsNorm::composed)
        };
        let lm_head = if untied {
            Some(vb.get((cfg.vocab_size, cfg.d_model), "lm_head.weight")?)
        } else {
            None
        };
        Ok(Self {
            cfg: cfg.clone(),
            shared,
            encoder: stack("encoder", cfg.num_layers, false)?,
            encoder_norm: norm("encoder")?,
            decoder: stack("decoder", cfg.decoder_layers(), true)?,
            decoder_norm: norm("decoder")?,
            lm_head,
            dropout_rng: Mutex::new(StdRng::seed_from_u64(0)),
        })
    }

    /// Reseeds the dropout masks (training: a pure function of seed and step).
    pub fn set_dropout_seed(&self, seed: u64) {
        if let Ok(mut rng) = self.dropout_rng.lock() {
            *rng = StdRng::seed_from_u64(seed);
        }
    }

    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        self.shared
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.cfg.d_model))
    }

    /// Encoder states (B, S, C). `mask` (B, S): 1 for tokens, 0 for padding.
    pub fn encode(&self, input_ids: &Tensor, mask: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let rng = train.then_some(&self.dropout_rng);
        let p = self.cfg.dropout_rate;
        let s = input_ids.dim(1)?;
        let mut bias = self.encoder[0]
            .self_attn
            .position_bias(s, 0, s, true, &self.cfg)?;
        if let Some(m) = mask {
            bias = bias.broadcast_add(&key_mask(m)?)?;
        }
        let mut x = residual_dropout(self.embed(input_ids)?, p, rng)?;
        for block in &self.encoder {
            let h =
                block
                    .self_attn
                    .forward(&block.self_norm.forward(&x)?, None, &bias, None, rng)?;
            x = (x + residual_dropout(h, p, rng)?)?;
            let h = block.ff.forward(&block.ff_norm.forward(&x)?, rng)?;
            x = (x + residual_dropout(h, p, rng)?)?;
        }
        residual_dropout(self.encoder_norm.forward(&x)?, p, rng)
    }

    /// Decoder logits (B, T, V) for `decoder_ids` after the `cache`d positions.
    pub fn decode(
        &self,
        decoder_ids: &Tensor,
        encoder_states: &Tensor,
        encoder_mask: Option<&Tensor>,
        cache: Option<&mut T5Cache>,
        train: bool,
    ) -> Result<Tensor> {
        let mut x = self.decode_hidden(decoder_ids, encoder_states, encoder_mask, cache, train)?;
        if self.cfg.scales_output() {
            x = (x * (self.cfg.d_model as f64).powf(-0.5))?;
        }
        matmul_t(&x, self.lm_head.as_ref().unwrap_or(&self.shared))
    }

    /// The decoder's final hidden states (B, T, C) after its last norm — transformers'
    /// `last_hidden_state` — for `decoder_ids` after the `cache`d positions.
    pub fn decode_hidden(
        &self,
        decoder_ids: &Tensor,
        encoder_states: &Tensor,
        encoder_mask: Option<&Tensor>,
        mut cache: Option<&mut T5Cache>,
        train: bool,
    ) -> Result<Tensor> {
        let rng = train.then_some(&self.dropout_rng);
        let p = self.cfg.dropout_rate;
        let t = decoder_ids.dim(1)?;
        let past = cache.as_ref().map_or(0, |c| c.self_kv.len());
        let dev = decoder_ids.device();
        let self_bias = self.decoder[0]
            .self_attn
            .position_bias(t, past, past + t, false, &self.cfg)?
            .broadcast_add(&crate::layers::attention::causal_mask(t, past, None, dev)?)?;
        let cross_bias = match encoder_mask {
            Some(m) => key_mask(m)?,
            None => Tensor::zeros((1, 1, 1, 1), DType::F32, dev)?,
        };
        let mut x = residual_dropout(self.embed(decoder_ids)?, p, rng)?;
        for (i, block) in self.decoder.iter().enumerate() {
            let c = cache
                .as_deref_mut()
                .map(|c| AttnCache::SelfAttn(&mut c.self_kv, i));
            let h =
                block
                    .self_attn
                    .forward(&block.self_norm.forward(&x)?, None, &self_bias, c, rng)?;
            x = (x + residual_dropout(h, p, rng)?)?;
            let (attn, norm) = block.cross.as_ref().expect("decoder block");
            let c = cache
                .as_deref_mut()
                .map(|c| AttnCache::Cross(&mut c.cross[i]));
            let h = attn.forward(
                &norm.forward(&x)?,
                Some(encoder_states),
                &cross_bias,
                c,
                rng,
            )?;
            x = (x + residual_dropout(h, p, rng)?)?;
            let h = block.ff.forward(&block.ff_norm.forward(&x)?, rng)?;
            x = (x + residual_dropout(h, p, rng)?)?;
        }
        residual_dropout(self.decoder_norm.forward(&x)?, p, rng)
    }

    /// Logits (B, T, V) of the whole model (teacher forcing).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        mask: Option<&Tensor>,
        decoder_ids: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let enc = self.encode(input_ids, mask, train)?;
        self.decode(decoder_ids, &enc, mask, None, train)
    }

    /// The decoder input for `labels` (B, T; -100 = ignored): `decoder_start_token_id` then the
    /// labels shifted right, -100 replaced by the pad id — transformers' `_shift_right`.
    pub fn shift_right(&self, labels: &[Vec<i64>]) -> Result<Vec<Vec<u32>>> {
        let start = self.cfg.decoder_start_token_id.ok_or_else(|| {
            candle_core::Error::Msg("config.json has no decoder_start_token_id".into())
        })?;
        let pad = self.cfg.pad_token_id.unwrap_or(0);
        Ok(labels
            .iter()
            .map(|row| {
                std::iter::once(start)
                    .chain(row.iter().take(row.len().saturating_sub(1)).map(|&l| {
                        if l < 0 {
                            pad
                        } else {
                            l as u32
                        }
                    }))
                    .collect()
            })
            .collect())
    }

    /// Every linear layer with its module path (`encoder.block.0.layer.0.SelfAttention.q`, …),
    /// for adapters.
    pub fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (stack, blocks) in [
            ("encoder", &mut self.encoder),
            ("decoder", &mut self.decoder),
        ] {
            for (i, b) in blocks.iter_mut().enumerate() {
                let p = format!("{stack}.block.{i}.layer");
                let ff_index = if b.cross.is_some() { 2 } else { 1 };
                let a = &mut b.self_attn;
                for (n, l) in [
                    ("q", &mut a.q),
                    ("k", &mut a.k),
                    ("v", &mut a.v),
                    ("o", &mut a.o),
                ] {
                    out.push((format!("{p}.0.SelfAttention.{n}"), l));
                }
                if let Some((a, _)) = &mut b.cross {
                    for (n, l) in [
                        ("q", &mut a.q),
                        ("k", &mut a.k),
                        ("v", &mut a.v),
                        ("o", &mut a.o),
                    ] {
                        out.push((format!("{p}.1.EncDecAttention.{n}"), l));
                    }
                }
                let f = &mut b.ff;
                for (n, l) in [
                    ("wi", &mut f.wi),
                    ("wi_0", &mut f.wi_0),
                    ("wi_1", &mut f.wi_1),
                ] {
                    if let Some(l) = l {
                        out.push((format!("{p}.{ff_index}.DenseReluDense.{n}"), l));
                    }
                }
                out.push((format!("{p}.{ff_index}.DenseReluDense.wo"), &mut f.wo));
            }
        }
        out
    }
}

/// Additive key mask (B, 1, 1, S) from a 0/1 attention mask (B, S).
fn key_mask(mask: &Tensor) -> Result<Tensor> {
    let (b, s) = mask.dims2()?;
    let m = mask.to_dtype(DType::F32)?;
    // 0 where visible, -inf where padded
    let neg = Tensor::full(f32::NEG_INFINITY, (b, s), mask.device())?;
    let zero = Tensor::zeros((b, s), DType::F32, mask.device())?;
    m.ge(0.5)?.where_cond(&zero, &neg)?.reshape((b, 1, 1, s))
}

impl crate::layers::linear::Linears for T5 {
    fn linears_mut(&mut self) -> Vec<(String, &mut crate::layers::linear::Linear)> {
        T5::linears_mut(self)
    }

    fn embeddings_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out = vec![("shared".to_string(), &mut self.shared)];
        if let Some(head) = self.lm_head.as_mut() {
            out.push(("lm_head".to_string(), head));
        }
        out
    }
}
