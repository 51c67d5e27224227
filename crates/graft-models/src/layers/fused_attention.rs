//! softmax(scale·Q Kᵀ + M) V as one op whose backward recomputes the probabilities instead of
//! keeping them: the composed version holds the scores, the masked scores and the probabilities —
//! three (B, H, T, S) f32 tensors per layer until the backward (for SmolLM2 at 4×256 tokens,
//! ~850 MB over its 30 layers). Here only Q, K, V and the output are kept. Computed one
//! (batch row, kv head) block at a time, so the transient scores are (R·T, S).
//!
//! Shapes: q (B, K, R·T, D) — the R query heads sharing kv head k folded into rows, as
//! attention.rs lays them out; k, v (B, K, S, D); mask additive, (T, S) or (B, 1, 1, T, S);
//! out (B, K, R·T, D). Backward per block, P = softmax(S): dV = Pᵀ dO; dP = dO Vᵀ;
//! dS = P ⊙ (dP − rowsum(dO ⊙ O)); dQ = scale·dS K; dK = scale·dSᵀ Q.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, D};

use super::cpu_op::{input_f32, output_like};

#[derive(Debug, Clone)]
struct FusedAttention {
    scale: f64,
    /// (T, S) shared by every row, or (B, T, S).
    mask: Tensor,
    /// Query rows per kv head = R·T; T = mask rows.
    t: usize,
}

impl FusedAttention {
    /// The additive mask for batch row `b`, repeated over the R heads: (R·T, S).
    fn mask_rows(&self, b: usize, rows: usize) -> Result<Tensor> {
        let m = match self.mask.rank() {
            2 => self.mask.clone(),
            _ => self.mask.get(b)?,
        };
        let r = rows / self.t;
        m.unsqueeze(0)?
            .broadcast_as((r, self.t, m.dim(1)?))?
            .reshape((rows, m.dim(1)?))
    }

    /// Probabilities (R·T, S) for one block.
    fn probs(&self, q: &Tensor, k: &Tensor, b: usize) -> Result<Tensor> {
        let scores = (q.matmul(&k.t()?)? * self.scale)?;
        let scores = scores.broadcast_add(&self.mask_rows(b, q.dim(0)?)?)?;
        // The composed softmax (candle's fused softmax_last_dim has no backward): these scores are
        // fresh tensors inside the op, no gradient flows through them, but nothing should rely
        // on that.
        candle_nn::ops::softmax(&scores, D::Minus1)
    }
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = "fused-attention";
        let (q, k, v) = (
            input_f32(op, qs, ql)?,
            input_f32(op, ks, kl)?,
            input_f32(op, vs, vl)?,
        );
        let (b, kh, rows, d) = q.dims4()?;
        let mut out = Vec::with_capacity(b * kh * rows * d);
        for bi in 0..b {
            for hi in 0..kh {
                let (qb, kb, vb) = (
                    q.get(bi)?.get(hi)?,
                    k.get(bi)?.get(hi)?,
                    v.get(bi)?.get(hi)?,
                );
                let o = self.probs(&qb, &kb, bi)?.matmul(&vb)?;
                out.extend(o.flatten_all()?.to_vec1::<f32>()?);
            }
        }
        let shape = Shape::from((b, kh, rows, d));
        Ok((output_like(out, qs), shape))
    }

    fn bwd(
        &self,
        q_in: &Tensor,
        k_in: &Tensor,
        v_in: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let f = |t: &Tensor| t.detach().to_dtype(DType::F32);
        let (q, k, v, o, g) = (f(q_in)?, f(k_in)?, f(v_in)?, f(out)?, f(grad)?);
        let (b, kh, _, _) = q.dims4()?;
        let (mut dq, mut dk, mut dv) = (Vec::new(), Vec::new(), Vec::new());
        for bi in 0..b {
            for hi in 0..kh {
                let (qb, kb, vb) = (
                    q.get(bi)?.get(hi)?,
                    k.get(bi)?.get(hi)?,
                    v.get(bi)?.get(hi)?,
                );
                let (ob, gb) = (o.get(bi)?.get(hi)?, g.get(bi)?.get(hi)?);
                let p = self.probs(&qb, &kb, bi)?;
                dv.push(p.t()?.matmul(&gb)?);
                let dp = gb.matmul(&vb.t()?)?;
                let di = (&gb * &ob)?.sum_keepdim(D::Minus1)?;
                let ds = (p * dp.broadcast_sub(&di)?)?;
                dq.push((ds.matmul(&kb)? * self.scale)?);
                dk.push((ds.t()?.matmul(&qb)? * self.scale)?);
            }
        }
        let stack = |parts: Vec<Tensor>, like: &Tensor| -> Result<Tensor> {
            Tensor::stack(&parts, 0)?
                .reshape(like.shape())?
                .to_dtype(like.dtype())
        };
        Ok((
            Some(stack(dq, q_in)?),
            Some(stack(dk, k_in)?),
            Some(stack(dv, v_in)?),
        ))
    }
}

/// softmax(scale·q kᵀ + mask) v with the layout of attention.rs (see the module doc).
pub fn fused_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    let mask = match mask.rank() {
        2 => mask.to_dtype(DType::F32)?,
        5 => mask.squeeze(2)?.squeeze(1)?.to_dtype(DType::F32)?,
        r => candle_core::bail!("fused-attention: a mask of rank {r}"),
    };
    let t = mask.dim(D::Minus2)?;
    if q.dim(2)? % t != 0 {
        candle_core::bail!(
            "fused-attention: {} query rows for a {t}-row mask",
            q.dim(2)?
        );
    }
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        FusedAttention { scale, mask, t },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn composed(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        scale: f64,
        r: usize,
    ) -> Result<Tensor> {
        let (b, kh, rows, _) = q.dims4()?;
        let (t, s) = (rows / r, k.dim(2)?);
        let scores = (q.matmul(&k.t()?)? * scale)?
            .reshape((b, kh, r, t, s))?
            .broadcast_add(mask)?;
        let p = candle_nn::ops::softmax(&scores, D::Minus1)?;
        p.reshape((b, kh, rows, s))?.matmul(v)
    }

    /// Output and the gradients of q, k, v equal the composed attention: T = 1, odd head dims,
    /// grouped queries (R = 3), a causal (T, S) mask and a packed (B, 1, 1, T, T) one.
    #[test]
    fn equals_composed_attention() -> Result<()> {
        let dev = Device::Cpu;
        for (b, kh, r, t, d) in [
            (1usize, 1usize, 1usize, 1usize, 4usize),
            (2, 2, 3, 5, 5),
            (3, 1, 2, 7, 8),
        ] {
            let q = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, kh, r * t, d), &dev)?)?;
            let k = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, kh, t, d), &dev)?)?;
            let v = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, kh, t, d), &dev)?)?;
            let causal = super::super::attention::causal_mask(t, 0, None, &dev)?;
            let seg: Vec<u32> = (0..b * t)
                .map(|i| ((i % t) * 2 / t.max(1)) as u32)
                .collect();
            let packed =
                super::super::attention::segment_mask(&Tensor::from_vec(seg, (b, t), &dev)?, None)?;
            for (name, mask) in [("causal", causal), ("packed", packed)] {
                let scale = 1.0 / (d as f64).sqrt();
                let w = Tensor::randn(0f32, 1.0, (b, kh, r * t, d), &dev)?;
                let fused =
                    fused_attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), &mask, scale)?;
                let reference =
                    composed(q.as_tensor(), k.as_tensor(), v.as_tensor(), &mask, scale, r)?;
                let diff = (&fused - &reference)?
                    .abs()?
                    .max_all()?
                    .to_scalar::<f32>()?;
                assert!(diff < 1e-5, "{name} {b}×{kh}×{r}×{t}×{d}: output {diff}");
                let (gf, gc) = (
                    (fused * &w)?.sum_all()?.backward()?,
                    (reference * &w)?.sum_all()?.backward()?,
                );
                for (which, var) in [("q", &q), ("k", &k), ("v", &v)] {
                    let (x, y) = (
                        gf.get(var.as_tensor()).unwrap(),
                        gc.get(var.as_tensor()).unwrap(),
                    );
                    let scale = y.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
                    let diff = (x - y)?.abs()?.max_all()?.to_scalar::<f32>()?;
                    assert!(diff <= 1e-5 * scale, "{name} ∂{which}: {diff}");
                }
            }
        }
        Ok(())
    }
}
