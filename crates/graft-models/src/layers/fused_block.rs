//! A pre-norm Llama block — RMSNorm → rotary GQA self-attention → residual → RMSNorm → SwiGLU
//! (or Gemma's GeGLU) MLP → residual — as one op with a hand-written backward (llm.c's approach), for training in
//! f32 on the CPU: full fine-tuning, or LoRA (y = x Wᵀ + s·(x Aᵀ) Bᵀ) on any of its projections. The composed block leaves ~40 graph nodes per layer to candle's
//! backward, which allocates a zero tensor and adds into it for every gradient it passes on,
//! copies for every transpose and runs the small ops one at a time; here the activations stay in
//! plain vectors, the projections are direct GEMM calls with transposes as strides, and attention
//! reads each head's columns in place.
//!
//! The block's tensors are not inputs of the op: the gradients of those the trainer declared
//! trainable ([`super::side_grads::set_trainable`]) go to the side store (side_grads.rs), which
//! the optimizer step adds in; the others (a frozen base under LoRA) get none and cost no GEMM.
//! A quantized base (QLoRA) is dequantized per projection for the forward and again for the
//! backward, as quant.rs does. Everything else — other adapters, LoRA dropout, biases, QK-norm,
//! soft-capping, attention dropout, sandwich norms, KV caches, bf16 — takes the composed block
//! (decoder.rs decides).
//!
//! Shapes: N = B·T tokens, C hidden, H query heads, K kv heads, D head dim, I intermediate.
//! x, y (B, T, C); Wq (H·D, C), Wk/Wv (K·D, C), Wo (C, H·D), Wg/Wu (I, C), Wd (C, I);
//! ln1/ln2 (C); LoRA A (r, in), B (out, r); cos/sin (B, 1, T, D); mask additive, (T, T) or
//! (B, 1, 1, T, T).

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_op::{f32_values, F32Values};
use super::fused_attention::{Block, Rows};
pub use super::fused_linear::Proj;
use super::fused_linear::ProjValues;
use super::fused_norm::FusedRmsNorm;
use super::fused_swiglu;
use super::side_grads::{add_side_grad, is_trainable};

/// Whether the fused block computes a block of this configuration exactly as the composed block
/// does. Every field is named, so a field added to `DecoderConfig` does not compile here until
/// someone decides whether the fused block handles it. The per-run state — f32 weights, bare or
/// plain-LoRA projections, trained tensors, no KV cache — is checked per call (decoder.rs).
pub fn handles(cfg: &crate::config::DecoderConfig) -> bool {
    use crate::config::{Activation, BlockKind, DecoderConfig, NormKind, QkNorm};
    let DecoderConfig {
        // Shapes: any (GQA, odd rotary pair counts, any head dim).
        model_type: _,
        vocab_size: _,
        hidden_size: _,
        intermediate_size: _,
        num_attention_heads: _,
        num_key_value_heads: _,
        head_dim: _,
        // Passed on to the fused norm and attention.
        rms_norm_eps: _,
        attn_scale: _,
        // Outside the blocks (embedding, final norm, LM head).
        embed_scale: _,
        final_softcap: _,
        tie_word_embeddings: _,
        // Per-layer rotary tables and sliding windows arrive as cos/sin and the mask.
        layers: _,
        block,
        norm,
        qk_norm,
        act,
        qkv_bias,
        o_bias,
        mlp_bias,
        attn_softcap,
        attention_dropout,
    } = cfg;
    let norm_ok = match norm {
        NormKind::Plain | NormKind::OnePlus => true,
    };
    let act_ok = match act {
        Activation::Silu | Activation::GeluTanh => true,
        Activation::Gelu => false,
    };
    *block == BlockKind::PreNorm
        && norm_ok
        && act_ok
        && *qk_norm == QkNorm::None
        && !qkv_bias
        && !o_bias
        && !mlp_bias
        && attn_softcap.is_none()
        && *attention_dropout == 0.0
}

/// The block's tensors.
#[derive(Debug, Clone)]
pub struct BlockParams {
    pub ln1: Tensor,
    pub q: Proj,
    pub k: Proj,
    pub v: Proj,
    pub o: Proj,
    pub ln2: Tensor,
    pub gate: Proj,
    pub up: Proj,
    pub down: Proj,
}

impl BlockParams {
    fn projs(&self) -> [&Proj; 7] {
        [
            &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
        ]
    }

    /// Every tensor: ln1, ln2, then each projection's W (and A, B).
    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut out = vec![&self.ln1, &self.ln2];
        for p in self.projs() {
            out.push(&p.w);
            if let Some((a, b, _)) = &p.lora {
                out.extend([a, b]);
            }
        }
        out
    }
}

/// What the op needs besides the tensors.
#[derive(Debug, Clone)]
pub struct BlockSpec {
    /// The MLP's gate activation: SiLU (SwiGLU) or tanh GELU (GeGLU).
    pub act: crate::config::Activation,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f64,
    pub norm: FusedRmsNorm,
}

/// Forward activations the backward reads (the input x is the op's argument); `z` = each
/// projection's x Aᵀ under LoRA (q, k, v, o, gate, up, down), empty otherwise.
struct Saved {
    z: [Vec<f32>; 7],
    h1: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    o: Vec<f32>,
    x2: Vec<f32>,
    h2: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
}

struct FusedBlock {
    spec: BlockSpec,
    w: BlockParams,
    /// (B, T, D) row-major.
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// (T, T), or (B, T, T) with `batched_mask`.
    mask: Vec<f32>,
    batched_mask: bool,
    batch: usize,
    seq: usize,
    saved: Mutex<Option<Saved>>,
}

impl FusedBlock {
    /// Rotates every head of every row of x (N × heads·D) in place by its position's angles
    /// (rotate-half: x·cos + rotate_half(x)·sin), or by their negatives with `inverse` (the
    /// backward: the rotation's transpose).
    fn rope(&self, x: &mut [f32], heads: usize, inverse: bool) {
        let d = self.spec.head_dim;
        x.par_chunks_mut(heads * d)
            .enumerate()
            .for_each(|(r, row)| {
                let (c, s) = (&self.cos[r * d..(r + 1) * d], &self.sin[r * d..(r + 1) * d]);
                for head in row.chunks_mut(d) {
                    super::rope::rotate_in_place(head, c, s, inverse);
                }
            });
    }

    fn attention_kernel(&self, b: usize) -> Block<'_> {
        let t = self.seq;
        Block {
            mask: match self.batched_mask {
                true => &self.mask[b * t * t..(b + 1) * t * t],
                false => &self.mask[..],
            },
            t,
            s: t,
            d: self.spec.head_dim,
            rows: t,
            scale: self.spec.scale as f32,
            softcap: None,
        }
    }

    /// Head h of batch row b as strided rows of a (N × heads·D) matrix.
    fn head<'a>(&self, x: &'a [f32], b: usize, h: usize, heads: usize) -> Rows<'a> {
        let d = self.spec.head_dim;
        Rows {
            data: &x[b * self.seq * heads * d + h * d..],
            stride: heads * d,
        }
    }

    /// Copies a contiguous (T × D) block into head h of batch row b of x (N × heads·D).
    fn scatter(&self, x: &mut [f32], block: &[f32], b: usize, h: usize, heads: usize) {
        let d = self.spec.head_dim;
        for (t, src) in block.chunks(d).enumerate() {
            let at = (b * self.seq + t) * heads * d + h * d;
            x[at..at + d].copy_from_slice(src);
        }
    }

    fn attention_forward(&self, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
        let (hq, hk, d) = (self.spec.heads, self.spec.kv_heads, self.spec.head_dim);
        let blocks: Vec<Vec<f32>> = (0..self.batch * hq)
            .into_par_iter()
            .map(|bh| {
                let (b, h) = (bh / hq, bh % hq);
                let kvh = h / (hq / hk);
                let mut o = vec![0f32; self.seq * d];
                self.attention_kernel(b).forward(
                    self.head(q, b, h, hq),
                    self.head(k, b, kvh, hk),
                    self.head(v, b, kvh, hk),
                    &mut o,
                );
                o
            })
            .collect();
        let mut o = vec![0f32; q.len()];
        for (bh, block) in blocks.iter().enumerate() {
            self.scatter(&mut o, block, bh / hq, bh % hq, hq);
        }
        o
    }

    /// (dq, dk, dv) in the rotated space; the R query heads of a kv head add into its dk, dv.
    fn attention_backward(&self, s: &Saved, d_o: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (hq, hk, d) = (self.spec.heads, self.spec.kv_heads, self.spec.head_dim);
        let (r, t) = (hq / hk, self.seq);
        let blocks: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..self.batch * hk)
            .into_par_iter()
            .map(|bk| {
                let (b, kvh) = (bk / hk, bk % hk);
                let (mut dq, mut dk, mut dv) =
                    (vec![0f32; r * t * d], vec![0f32; t * d], vec![0f32; t * d]);
                for (i, dq_h) in dq.chunks_mut(t * d).enumerate() {
                    let h = kvh * r + i;
                    self.attention_kernel(b).backward(
                        (
                            self.head(&s.q, b, h, hq),
                            self.head(&s.k, b, kvh, hk),
                            self.head(&s.v, b, kvh, hk),
                            self.head(&s.o, b, h, hq),
                            self.head(d_o, b, h, hq),
                        ),
                        dq_h,
                        &mut dk,
                        &mut dv,
                        i > 0,
                    );
                }
                (dq, dk, dv)
            })
            .collect();
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; s.q.len()],
            vec![0f32; s.k.len()],
            vec![0f32; s.v.len()],
        );
        for (bk, (bq, bkk, bv)) in blocks.iter().enumerate() {
            let (b, kvh) = (bk / hk, bk % hk);
            for (i, dq_h) in bq.chunks(t * d).enumerate() {
                self.scatter(&mut dq, dq_h, b, kvh * r + i, hq);
            }
            self.scatter(&mut dk, bkk, b, kvh, hk);
            self.scatter(&mut dv, bv, b, kvh, hk);
        }
        (dq, dk, dv)
    }

    /// ln1, ln2 and the projections' values (q, k, v, o, gate, up, down).
    #[allow(clippy::type_complexity)]
    fn values(&self) -> Result<(F32Values<'_>, F32Values<'_>, Vec<ProjValues<'_>>)> {
        let projs = self
            .w
            .projs()
            .into_iter()
            .map(Proj::values)
            .collect::<Result<Vec<_>>>()?;
        Ok((f32_values(&self.w.ln1)?, f32_values(&self.w.ln2)?, projs))
    }
}

impl CustomOp1 for FusedBlock {
    fn name(&self) -> &'static str {
        "fused-block"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = match (xs, xl.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => &v[a..b],
            _ => candle_core::bail!("fused-block: needs a contiguous f32 input"),
        };
        let (ln1, ln2, p) = self.values()?;
        let spec = &self.spec;
        let n = self.batch * self.seq;
        let c = ln1.len();
        let (hd, kd) = (spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim);
        let inter = self.w.gate.w.dim(0)?;
        let mut h1 = vec![0f32; n * c];
        spec.norm.forward_rows(x, &spec.norm.scale(&ln1), &mut h1);
        let (mut q, zq) = p[0].forward(&h1, n, c, hd)?;
        let (mut k, zk) = p[1].forward(&h1, n, c, kd)?;
        let (v, zv) = p[2].forward(&h1, n, c, kd)?;
        self.rope(&mut q, spec.heads, false);
        self.rope(&mut k, spec.kv_heads, false);
        let o = self.attention_forward(&q, &k, &v);
        let (mut x2, zo) = p[3].forward(&o, n, hd, c)?;
        x2.par_iter_mut()
            .zip(x.par_iter())
            .for_each(|(a, &b)| *a += b);
        let mut h2 = vec![0f32; n * c];
        spec.norm.forward_rows(&x2, &spec.norm.scale(&ln2), &mut h2);
        let (g, zg) = p[4].forward(&h2, n, c, inter)?;
        let (u, zu) = p[5].forward(&h2, n, c, inter)?;
        let act: Vec<f32> = g
            .par_iter()
            .zip(u.par_iter())
            .map(|(&g, &u)| fused_swiglu::forward(spec.act, g, u))
            .collect();
        let (mut y, zd) = p[6].forward(&act, n, inter, c)?;
        y.par_iter_mut()
            .zip(x2.par_iter())
            .for_each(|(a, &b)| *a += b);
        let saved = Saved {
            z: [zq, zk, zv, zo, zg, zu, zd],
            h1,
            q,
            k,
            v,
            o,
            x2,
            h2,
            g,
            u,
        };
        *self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("fused-block poisoned".into()))? = Some(saved);
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(&self, x_in: &Tensor, _y: &Tensor, dy_in: &Tensor) -> Result<Option<Tensor>> {
        let s = self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("fused-block poisoned".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("fused-block: backward run twice".into()))?;
        let (xc, dyc) = (
            x_in.contiguous()?,
            dy_in.to_dtype(DType::F32)?.contiguous()?,
        );
        let (x, dy) = (f32_values(&xc)?, f32_values(&dyc)?);
        let (ln1, ln2, p) = self.values()?;
        let spec = &self.spec;
        let n = self.batch * self.seq;
        let c = ln1.len();
        let (hd, kd) = (spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim);
        let inter = self.w.gate.w.dim(0)?;
        let pr = self.w.projs();
        let mut grads: Vec<(Tensor, Vec<f32>)> = Vec::new();

        // MLP: y = x2 + a Wdᵀ, a = act(g)·u, g = h2 Wgᵀ, u = h2 Wuᵀ.
        let act: Vec<f32> =
            s.g.par_iter()
                .zip(s.u.par_iter())
                .map(|(&g, &u)| fused_swiglu::forward(spec.act, g, u))
                .collect();
        let mut d_act = vec![0f32; n * inter];
        p[6].backward(
            pr[6],
            (&act, &s.z[6], &dy),
            (n, inter, c),
            &mut d_act,
            false,
            &mut grads,
        )?;
        drop(act);
        let (dg, du): (Vec<f32>, Vec<f32>) =
            s.g.par_iter()
                .zip(s.u.par_iter().zip(d_act.par_iter()))
                .map(|(&g, (&u, &d))| fused_swiglu::backward(spec.act, g, u, d))
                .unzip();
        let mut dh2 = vec![0f32; n * c];
        for (j, (i, d)) in [(4, &dg), (5, &du)].into_iter().enumerate() {
            let io = (&s.h2[..], &s.z[i][..], &d[..]);
            p[i].backward(pr[i], io, (n, c, inter), &mut dh2, j > 0, &mut grads)?;
        }
        let mut dx2 = dy.to_vec();
        let dln2 = spec
            .norm
            .backward_rows(&s.x2, &spec.norm.scale(&ln2), &dh2, &mut dx2, true);
        if is_trainable(self.w.ln2.id()) {
            grads.push((self.w.ln2.clone(), dln2));
        }

        // Attention: x2 = x + o Woᵀ.
        let mut d_o = vec![0f32; n * hd];
        p[3].backward(
            pr[3],
            (&s.o, &s.z[3], &dx2),
            (n, hd, c),
            &mut d_o,
            false,
            &mut grads,
        )?;
        let (mut dq, mut dk, dv) = self.attention_backward(&s, &d_o);
        self.rope(&mut dq, spec.heads, true);
        self.rope(&mut dk, spec.kv_heads, true);
        let mut dh1 = vec![0f32; n * c];
        for (j, (i, d, out)) in [(0, &dq, hd), (1, &dk, kd), (2, &dv, kd)]
            .into_iter()
            .enumerate()
        {
            let io = (&s.h1[..], &s.z[i][..], &d[..]);
            p[i].backward(pr[i], io, (n, c, out), &mut dh1, j > 0, &mut grads)?;
        }
        let mut dx = dx2;
        let dln1 = spec
            .norm
            .backward_rows(&x, &spec.norm.scale(&ln1), &dh1, &mut dx, true);
        if is_trainable(self.w.ln1.id()) {
            grads.push((self.w.ln1.clone(), dln1));
        }

        drop((ln1, ln2, p));
        for (t, g) in grads {
            add_side_grad(t.id(), Tensor::from_vec(g, t.shape(), &Device::Cpu)?)?;
        }
        Ok(Some(Tensor::from_vec(dx, x_in.shape(), &Device::Cpu)?))
    }
}

/// The block on x (B, T, C) as one op; the tensors' gradients go to the side store.
pub fn fused_block(
    x: &Tensor,
    spec: BlockSpec,
    w: BlockParams,
    cos: &Tensor,
    sin: &Tensor,
    mask: &Tensor,
) -> Result<Tensor> {
    let (batch, seq, _) = x.dims3()?;
    let flat =
        |t: &Tensor| -> Result<Vec<f32>> { t.to_dtype(DType::F32)?.flatten_all()?.to_vec1() };
    let batched_mask = mask.rank() == 5;
    let mask_rows = mask.dims()[mask.rank() - 2..].to_vec();
    if mask_rows != [seq, seq] || (batched_mask && mask.dim(0)? != batch) {
        candle_core::bail!(
            "fused-block: a {:?} mask for {batch}×{seq} tokens",
            mask.dims()
        );
    }
    let op = FusedBlock {
        spec,
        w,
        cos: flat(&cos.broadcast_as((batch, 1, seq, cos.dim(3)?))?)?,
        sin: flat(&sin.broadcast_as((batch, 1, seq, sin.dim(3)?))?)?,
        mask: flat(mask)?,
        batched_mask,
        batch,
        seq,
        saved: Mutex::new(None),
    };
    // An untracked input (frozen embeddings under LoRA) would leave the op out of the graph and
    // its backward — where the block's gradients come from — never called.
    let x = match x.track_op() {
        true => x.contiguous()?,
        false => candle_core::Var::from_tensor(&x.contiguous()?)?
            .as_tensor()
            .clone(),
    };
    x.apply_op1(op)
}
