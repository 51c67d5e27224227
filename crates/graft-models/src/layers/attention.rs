//! Causal self-attention with GQA, optional QK-norm, soft-capping and sliding windows — the eager
//! path of transformers, written with differentiable ops.
//!
//! Shapes: B batch, T new positions, S = cached + new positions, H query heads, K kv heads,
//! R = H / K queries per kv head, D head_dim, C hidden.
//! x (B, T, C) → q (B, H, T, D), k/v (B, K, S, D) → scores (B, K, R·T, S) → out (B, T, C).

use std::sync::Mutex;

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;
use rand::{rngs::StdRng, Rng};

use super::{kv_cache::KvCache, linear::Linear, norm::RmsNorm, rope};
use crate::config::{DecoderConfig, QkNorm};

#[derive(Debug, Clone)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    qk_norm: QkNorm,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    scale: f64,
    softcap: Option<f64>,
    dropout: f64,
}

impl Attention {
    pub fn new(vb: VarBuilder, cfg: &DecoderConfig) -> Result<Self> {
        let (c, h, k, d) = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let (q_norm_size, k_norm_size) = match cfg.qk_norm {
            QkNorm::None => (0, 0),
            QkNorm::PerHead => (d, d),
            QkNorm::Full => (h * d, k * d),
        };
        let norm = |name: &str, size: usize| -> Result<Option<RmsNorm>> {
            if size == 0 {
                return Ok(None);
            }
            RmsNorm::new(vb.pp(name), size, cfg.rms_norm_eps, cfg.norm).map(Some)
        };
        Ok(Self {
            q_proj: Linear::new(vb.pp("q_proj"), c, h * d, cfg.qkv_bias)?,
            k_proj: Linear::new(vb.pp("k_proj"), c, k * d, cfg.qkv_bias)?,
            v_proj: Linear::new(vb.pp("v_proj"), c, k * d, cfg.qkv_bias)?,
            o_proj: Linear::new(vb.pp("o_proj"), h * d, c, cfg.o_bias)?,
            q_norm: norm("q_norm", q_norm_size)?,
            k_norm: norm("k_norm", k_norm_size)?,
            qk_norm: cfg.qk_norm,
            heads: h,
            kv_heads: k,
            head_dim: d,
            scale: cfg.attn_scale,
            softcap: cfg.attn_softcap,
            dropout: cfg.attention_dropout,
        })
    }

    /// (heads, kv heads, head dim, scale) and the q, k, v, o projections as fused_block.rs takes
    /// them (f32 or frozen quantized, bare or plain LoRA); whether the configuration suits the
    /// fused block at all is `fused_block::handles`.
    #[allow(clippy::type_complexity)]
    pub fn fused_parts(
        &self,
    ) -> Option<((usize, usize, usize, f64), [super::fused_block::Proj; 4])> {
        let projs = [
            self.q_proj.fused_proj()?,
            self.k_proj.fused_proj()?,
            self.v_proj.fused_proj()?,
            self.o_proj.fused_proj()?,
        ];
        Some((
            (self.heads, self.kv_heads, self.head_dim, self.scale),
            projs,
        ))
    }

    /// `mask` is additive, (T, S): 0 where a query may see a key, -inf elsewhere.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        cache: Option<(&mut KvCache, usize)>,
        dropout_rng: Option<&Mutex<StdRng>>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (h, k, d) = (self.heads, self.kv_heads, self.head_dim);
        let mut q = self.q_proj.forward(x, dropout_rng)?;
        let mut kk = self.k_proj.forward(x, dropout_rng)?;
        let v = self.v_proj.forward(x, dropout_rng)?;
        if self.qk_norm == QkNorm::Full {
            q = self.q_norm.as_ref().expect("q_norm").forward(&q)?;
            kk = self.k_norm.as_ref().expect("k_norm").forward(&kk)?;
        }
        let mut q = q.reshape((b, t, h, d))?;
        let mut kk = kk.reshape((b, t, k, d))?;
        if self.qk_norm == QkNorm::PerHead {
            q = self.q_norm.as_ref().expect("q_norm").forward(&q)?;
            kk = self.k_norm.as_ref().expect("k_norm").forward(&kk)?;
        }
        let q = rope::apply_fused(&q.transpose(1, 2)?.contiguous()?, cos, sin)?;
        let kk = rope::apply_fused(&kk.transpose(1, 2)?.contiguous()?, cos, sin)?;
        let v = v.reshape((b, t, k, d))?.transpose(1, 2)?.contiguous()?;
        let (kk, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &kk, &v)?,
            None => (kk, v),
        };
        let s = kk.dim(2)?;
        let r = h / k;

        // Query heads h = kv·R + r share kv head kv (HF's repeat_kv order): fold R into the rows.
        let q = q.reshape((b, k, r * t, d))?;
        let dropout_on = dropout_rng.is_some() && self.dropout > 0.0;
        if !dropout_on {
            // Without dropout: the op that keeps no (T, S) probabilities.
            let out = super::fused_attention::fused_attention(
                &q,
                &kk,
                &v,
                mask,
                self.scale,
                self.softcap,
            )?
            .reshape((b, h, t, d))?
            .transpose(1, 2)?
            .reshape((b, t, h * d))?;
            return self.o_proj.forward(&out, dropout_rng);
        }
        let mut scores = (q.matmul(&kk.t()?)? * self.scale)?;
        if let Some(cap) = self.softcap {
            scores = ((scores / cap)?.tanh()? * cap)?;
        }
        let scores = scores
            .to_dtype(DType::F32)?
            .reshape((b, k, r, t, s))?
            .broadcast_add(mask)?;
        let mut probs = candle_nn::ops::softmax(&scores, D::Minus1)?.to_dtype(x.dtype())?;
        if let (Some(rng), true) = (dropout_rng, self.dropout > 0.0) {
            probs = dropout(&probs, self.dropout, rng)?;
        }
        let out = probs.reshape((b, k, r * t, s))?.matmul(&v)?; // (B, K, R·T, D)
        let out = out
            .reshape((b, h, t, d))?
            .transpose(1, 2)?
            .reshape((b, t, h * d))?;
        self.o_proj.forward(&out, dropout_rng)
    }
}

/// Additive causal mask (T, S) for `t` new positions after `past` cached ones; `window` keeps only the
/// last `window` keys of each query (itself included), as transformers' sliding-window masks do.
pub fn causal_mask(
    t: usize,
    past: usize,
    window: Option<usize>,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let s = past + t;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            let qi = past + i;
            (0..s).map(move |j| {
                let visible = j <= qi && window.is_none_or(|w| qi - j < w);
                if visible {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (t, s), device)
}

/// Which earlier positions each position sees.
#[derive(Debug, Clone, Copy)]
pub enum Masking<'a> {
    /// Every earlier position (of the cache and the input).
    Causal,
    /// Packed rows: segment ids (B, T); earlier positions of the same segment.
    Packed(&'a Tensor),
    /// Left-padded rows (batched decoding): row b's first `pads[b]` positions are padding.
    Padded(&'a [usize]),
}

impl<'a> From<Option<&'a Tensor>> for Masking<'a> {
    fn from(segments: Option<&'a Tensor>) -> Self {
        segments.map_or(Masking::Causal, Masking::Packed)
    }
}

/// Additive causal mask (B, 1, 1, T, S) for left-padded rows: row b's first `pads[b]` positions
/// (cached or new) are padding, which no query sees; a padding query sees itself only (its output
/// is never used, and a row of −∞ would make NaN).
pub fn padded_mask(
    t: usize,
    past: usize,
    window: Option<usize>,
    pads: &[usize],
    device: &candle_core::Device,
) -> Result<Tensor> {
    let s = past + t;
    let mut mask = Vec::with_capacity(pads.len() * t * s);
    for &pad in pads {
        for i in 0..t {
            let qi = past + i;
            mask.extend((0..s).map(|j| {
                let visible = if qi < pad {
                    j == qi
                } else {
                    j >= pad && j <= qi && window.is_none_or(|w| qi - j < w)
                };
                if visible {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            }));
        }
    }
    Tensor::from_vec(mask, (pads.len(), 1, 1, t, s), device)
}

/// Additive block-diagonal causal mask (B, 1, 1, T, T) from segment ids (B, T): a query sees keys of
/// its own segment at or before it (and within `window`).
pub fn segment_mask(segments: &Tensor, window: Option<usize>) -> Result<Tensor> {
    let rows: Vec<Vec<u32>> = segments.to_vec2()?;
    let (b, t) = (rows.len(), rows.first().map_or(0, Vec::len));
    let mut mask = Vec::with_capacity(b * t * t);
    for seg in &rows {
        for i in 0..t {
            for j in 0..t {
                let visible = j <= i && seg[j] == seg[i] && window.is_none_or(|w| i - j < w);
                mask.push(if visible { 0.0 } else { f32::NEG_INFINITY });
            }
        }
    }
    Tensor::from_vec(mask, (b, 1, 1, t, t), segments.device())
}

/// Inverted dropout with a mask drawn from graft's own seeded RNG: candle's CPU RNG cannot be seeded,
/// and a resumed run must draw the same masks as an uninterrupted one.
pub fn dropout(x: &Tensor, p: f64, rng: &Mutex<StdRng>) -> Result<Tensor> {
    let n = x.elem_count();
    let scale = (1.0 / (1.0 - p)) as f32;
    let keep: Vec<f32> = {
        let mut rng = rng
            .lock()
            .map_err(|_| candle_core::Error::Msg("dropout RNG poisoned".into()))?;
        (0..n)
            .map(|_| if rng.random::<f64>() >= p { scale } else { 0.0 })
            .collect()
    };
    let mask = Tensor::from_vec(keep, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x * mask
}
