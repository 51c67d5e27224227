//! T5's attention: no 1/√d scaling, no rotary positions; a learned bias per (relative-position
//! bucket, head), owned by block 0 of a stack and shared by all its blocks, is added to the scores.
//! Used for self-attention (bidirectional buckets in the encoder, causal in the decoder) and for
//! the decoder's cross-attention over the encoder states (no position bias).
//!
//! Shapes: B batch, T queries, S keys, H heads, D d_kv, C d_model.
//! x (B, T, C) → q (B, H, T, D), k/v (B, H, S, D) → scores (B, H, T, S) → out (B, T, C).

use std::sync::Mutex;

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;
use rand::rngs::StdRng;

use super::attention::dropout;
use super::kv_cache::KvCache;
use super::linear::Linear;
use crate::t5::T5Config;

/// transformers' `_relative_position_bucket` for `rel` = key position − query position.
pub fn relative_bucket(
    rel: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> u32 {
    let mut buckets = num_buckets as i64;
    let mut bucket = 0i64;
    let n = if bidirectional {
        buckets /= 2;
        if rel > 0 {
            bucket += buckets;
        }
        rel.abs()
    } else {
        (-rel).max(0)
    };
    let max_exact = buckets / 2;
    if n < max_exact {
        bucket += n;
    } else {
        // float32 as torch computes it, truncated toward zero like `.to(torch.long)`
        let ratio = (max_distance as f64 / max_exact as f64).ln() as f32;
        let large = max_exact
            + ((n as f32 / max_exact as f32).ln() / ratio * (buckets - max_exact) as f32) as i64;
        bucket += large.min(buckets - 1);
    }
    bucket as u32
}

#[derive(Debug, Clone)]
pub struct T5Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    /// (buckets, H), in block 0 of each stack's self-attention only.
    pub relative_attention_bias: Option<Tensor>,
    heads: usize,
    d_kv: usize,
    dropout: f64,
}

impl T5Attention {
    pub(crate) fn new(vb: VarBuilder, cfg: &T5Config, has_bias: bool) -> Result<Self> {
        let (c, inner) = (cfg.d_model, cfg.num_heads * cfg.d_kv);
        Ok(Self {
            q: Linear::new(vb.pp("q"), c, inner, false)?,
            k: Linear::new(vb.pp("k"), c, inner, false)?,
            v: Linear::new(vb.pp("v"), c, inner, false)?,
            o: Linear::new(vb.pp("o"), inner, c, false)?,
            relative_attention_bias: if has_bias {
                Some(vb.get(
                    (cfg.relative_attention_num_buckets, cfg.num_heads),
                    "relative_attention_bias.weight",
                )?)
            } else {
                None
            },
            heads: cfg.num_heads,
            d_kv: cfg.d_kv,
            dropout: cfg.dropout_rate,
        })
    }

    fn heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        x.reshape((b, t, self.heads, self.d_kv))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// `kv`: the encoder states for cross-attention (None: self-attention over `x`). `bias` is
    /// added to the scores: position bias and/or additive mask, broadcastable to (B, H, T, S).
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        kv: Option<&Tensor>,
        bias: &Tensor,
        cache: Option<AttnCache>,
        rng: Option<&Mutex<StdRng>>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let q = self.heads(&self.q.forward(x, rng)?)?;
        let project = |src: &Tensor| -> Result<(Tensor, Tensor)> {
            Ok((
                self.heads(&self.k.forward(src, rng)?)?,
                self.heads(&self.v.forward(src, rng)?)?,
            ))
        };
        let (k, v) = match (cache, kv) {
            (None, None) => project(x)?,
            (None, Some(enc)) => project(enc)?,
            (Some(AttnCache::SelfAttn(c, layer)), None) => {
                let layer: usize = layer;
                let (k, v) = project(x)?;
                c.append(layer, &k, &v)?
            }
            (Some(AttnCache::Cross(slot)), Some(enc)) => match slot {
                Some(kv) => kv.clone(),
                None => {
                    let kv = project(enc)?;
                    *slot = Some(kv.clone());
                    kv
                }
            },
            _ => candle_core::bail!("t5 attention: cache kind does not match the attention"),
        };
        let scores = q
            .matmul(&k.t()?)?
            .to_dtype(DType::F32)?
            .broadcast_add(bias)?;
        let mut probs = candle_nn::ops::softmax(&scores, D::Minus1)?.to_dtype(x.dtype())?;
        if let (Some(rng), true) = (rng, self.dropout > 0.0) {
            probs = dropout(&probs, self.dropout, rng)?;
        }
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, t, self.heads * self.d_kv))?;
        self.o.forward(&out, rng)
    }

    /// The position bias (1, H, T, S) for queries at `past..past+t` over keys `0..s`.
    pub(crate) fn position_bias(
        &self,
        t: usize,
        past: usize,
        s: usize,
        bidirectional: bool,
        cfg: &T5Config,
    ) -> Result<Tensor> {
        let table = self
            .relative_attention_bias
            .as_ref()
            .expect("block 0 has the bias");
        let ids: Vec<u32> = (0..t)
            .flat_map(|i| {
                (0..s).map(move |j| {
                    let rel = j as i64 - (past + i) as i64;
                    relative_bucket(
                        rel,
                        bidirectional,
                        cfg.relative_attention_num_buckets,
                        cfg.relative_attention_max_distance,
                    )
                })
            })
            .collect();
        let ids = Tensor::from_vec(ids, t * s, table.device())?;
        table
            .index_select(&ids, 0)?
            .reshape((t, s, self.heads))?
            .permute((2, 0, 1))?
            .unsqueeze(0)?
            .to_dtype(DType::F32)
    }
}

pub(crate) enum AttnCache<'a> {
    SelfAttn(&'a mut KvCache, usize),
    Cross(&'a mut Option<(Tensor, Tensor)>),
}

/// What incremental decoding keeps: self-attention k/v per decoder block and the cross-attention
/// k/v of the encoder states (computed once).
#[derive(Debug, Clone)]
pub struct T5Cache {
    pub self_kv: KvCache,
    pub cross: Vec<Option<(Tensor, Tensor)>>,
}

impl T5Cache {
    pub fn new(decoder_layers: usize) -> Self {
        Self {
            self_kv: KvCache::new(decoder_layers),
            cross: vec![None; decoder_layers],
        }
    }
}
