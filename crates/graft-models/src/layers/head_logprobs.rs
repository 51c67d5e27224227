//! Next-token log-probs straight from the final hidden states and the LM head, in row chunks, so
//! the (N, V) logits are never held whole — neither in the forward nor kept for the backward,
//! which recomputes each chunk's logits (Liger-style fused linear + cross-entropy). For a 49k
//! vocabulary and 1k tokens the full logits, their log-softmax and its gradient are three
//! 200 MB tensors; here one chunk of at most [`CHUNK_ELEMENTS`] logits exists at a time.
//!
//! Shapes: h (N, H) hidden states; W (V, H) head; targets (N) token ids; out (N, 2) =
//! [log p(target), log Σ exp(logits)] per row, f32.
//! Backward, per row with p = softmax(z): ∂z = g_logp·(onehot(target) − p) + g_lse·p;
//! ∂h = ∂z W; ∂W = ∂zᵀ h (only when W is trained).

use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_op::{exp, f32_values, gemm_par, input_f32};

/// Logits per chunk (rows × vocabulary).
pub const CHUNK_ELEMENTS: usize = 1 << 22;

#[derive(Debug, Clone)]
struct HeadLogprobs {
    targets: Vec<u32>,
}

fn rows_per_chunk(v: usize) -> usize {
    (CHUNK_ELEMENTS / v.max(1)).max(1)
}

/// Logits z (len × V) = h Wᵀ for rows `start..start + len` of h (N × H).
fn chunk_logits(
    h: &[f32],
    w: &[f32],
    (start, len): (usize, usize),
    (hd, v): (usize, usize),
) -> Vec<f32> {
    let mut z = vec![0f32; len * v];
    let rows = &h[start * hd..(start + len) * hd];
    gemm_par((len, v, hd), &mut z, false, (rows, hd, 1), (w, 1, hd), 1.0);
    z
}

/// log Σ exp(z) of one row (max-shifted, summed in f64).
fn log_sum_exp(z: &[f32]) -> f32 {
    let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let s: f64 = z.iter().map(|&x| exp(x - m) as f64).sum();
    m + s.ln() as f32
}

impl CustomOp2 for HeadLogprobs {
    fn name(&self) -> &'static str {
        "head-logprobs"
    }

    fn cpu_fwd(
        &self,
        hs: &CpuStorage,
        hl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = "head-logprobs";
        let (ht, wt) = (input_f32(op, hs, hl)?, input_f32(op, ws, wl)?);
        let ((n, hd), (v, _)) = (ht.dims2()?, wt.dims2()?);
        let (h, w) = (f32_values(&ht)?, f32_values(&wt)?);
        let mut out = vec![0f32; 2 * n];
        let step = rows_per_chunk(v);
        for start in (0..n).step_by(step) {
            let len = step.min(n - start);
            let z = chunk_logits(&h, &w, (start, len), (hd, v));
            out[2 * start..2 * (start + len)]
                .par_chunks_mut(2)
                .zip(z.par_chunks(v))
                .enumerate()
                .for_each(|(r, (o, zr))| {
                    let lse = log_sum_exp(zr);
                    o[0] = zr[self.targets[start + r] as usize] - lse;
                    o[1] = lse;
                });
        }
        Ok((CpuStorage::F32(out), Shape::from((n, 2))))
    }

    fn bwd(
        &self,
        h_in: &Tensor,
        w_in: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let f32c = |t: &Tensor| t.detach().to_dtype(DType::F32)?.contiguous();
        let (ht, wt, rt, gt) = (f32c(h_in)?, f32c(w_in)?, f32c(res)?, f32c(grad)?);
        let ((n, hd), (v, _)) = (ht.dims2()?, wt.dims2()?);
        let (h, w, out, g) = (
            f32_values(&ht)?,
            f32_values(&wt)?,
            f32_values(&rt)?,
            f32_values(&gt)?,
        );
        let want_w = w_in.track_op();
        let mut dh = vec![0f32; n * hd];
        let mut dw = if want_w {
            vec![0f32; v * hd]
        } else {
            Vec::new()
        };
        let step = rows_per_chunk(v);
        for start in (0..n).step_by(step) {
            let len = step.min(n - start);
            // ∂z = (g_lse − g_logp)·p, plus g_logp at the row's target; p from the kept lse.
            let mut dz = chunk_logits(&h, &w, (start, len), (hd, v));
            dz.par_chunks_mut(v).enumerate().for_each(|(r, zr)| {
                let i = start + r;
                let (g_logp, g_lse, lse) = (g[2 * i], g[2 * i + 1], out[2 * i + 1]);
                let c = g_lse - g_logp;
                zr.iter_mut().for_each(|z| *z = c * exp(*z - lse));
                zr[self.targets[i] as usize] += g_logp;
            });
            gemm_par(
                (len, hd, v),
                &mut dh[start * hd..(start + len) * hd],
                false,
                (&dz, v, 1),
                (&w, hd, 1),
                1.0,
            );
            if want_w {
                let rows = &h[start * hd..(start + len) * hd];
                gemm_par(
                    (v, hd, len),
                    &mut dw,
                    start > 0,
                    (&dz, 1, v),
                    (rows, hd, 1),
                    1.0,
                );
            }
        }
        let dh = Tensor::from_vec(dh, (n, hd), &Device::Cpu)?.to_dtype(h_in.dtype())?;
        let dw = match want_w {
            true => Some(Tensor::from_vec(dw, (v, hd), &Device::Cpu)?.to_dtype(w_in.dtype())?),
            false => None,
        };
        Ok((Some(dh), dw))
    }
}

/// (log p(target), log Σ exp(logits)) per row (N) for hidden states h (N, H) under head W (V, H),
/// without materializing the (N, V) logits; differentiable in h and W.
pub fn head_logprobs(h: &Tensor, w: &Tensor, targets: &[u32]) -> Result<(Tensor, Tensor)> {
    let (n, _) = h.dims2()?;
    if targets.len() != n {
        candle_core::bail!("head-logprobs: {} targets for {n} rows", targets.len());
    }
    let v = w.dim(0)?;
    if let Some(bad) = targets.iter().find(|&&t| t as usize >= v) {
        candle_core::bail!("head-logprobs: target {bad} is outside the vocabulary ({v})");
    }
    let out = h.contiguous()?.apply_op2(
        &w.contiguous()?,
        HeadLogprobs {
            targets: targets.to_vec(),
        },
    )?;
    Ok((
        out.narrow(1, 0, 1)?.squeeze(1)?,
        out.narrow(1, 1, 1)?.squeeze(1)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// Values and gradients (h and W, through both outputs) equal the composed
    /// matmul → log-softmax → gather, on edge shapes: one row, odd sizes, chunks that split rows.
    #[test]
    fn equals_the_composed_version() -> Result<()> {
        let dev = Device::Cpu;
        for (n, hid, v) in [(1usize, 3usize, 5usize), (7, 9, 11), (33, 16, 300_000)] {
            let h = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, hid), &dev)?)?;
            let w = Var::from_tensor(&Tensor::randn(0f32, 0.3, (v, hid), &dev)?)?;
            let targets: Vec<u32> = (0..n).map(|i| ((i * 7919) % v) as u32).collect();
            let tt = Tensor::from_slice(&targets, (n, 1), &dev)?;
            // weights on the two outputs so both gradients matter
            let a = Tensor::randn(0f32, 1.0, n, &dev)?;
            let b = Tensor::randn(0f32, 1.0, n, &dev)?;
            let (lp, lse) = head_logprobs(h.as_tensor(), w.as_tensor(), &targets)?;
            let fused = ((lp * &a)?.sum_all()? + (lse * &b)?.sum_all()?)?;
            let z = h.as_tensor().matmul(&w.as_tensor().t()?)?;
            let ls = candle_nn::ops::log_softmax(&z, candle_core::D::Minus1)?;
            let lp2 = ls.gather(&tt, 1)?.squeeze(1)?;
            let lse2 = (z.gather(&tt, 1)?.squeeze(1)? - &lp2)?;
            // The tolerance scales with the terms summed, not their (cancelling) sum: the composed
            // reference's f32 log-sum-exp over 300k logits is itself off by ~1e-6 relative per term.
            let terms = ((lp2.abs()? * a.abs()?)?.sum_all()?
                + (lse2.abs()? * b.abs()?)?.sum_all()?)?
            .to_scalar::<f32>()?;
            let composed = ((lp2 * &a)?.sum_all()? + (lse2 * &b)?.sum_all()?)?;
            let (f, c) = (fused.to_scalar::<f32>()?, composed.to_scalar::<f32>()?);
            assert!(
                (f - c).abs() <= 1e-5 * terms.max(1.0),
                "{n}×{v}: {f} vs {c} (terms {terms})"
            );
            let (gf, gc) = (fused.backward()?, composed.backward()?);
            for (name, var) in [("h", &h), ("W", &w)] {
                let x = gf.get(var.as_tensor()).expect("fused grad");
                let y = gc.get(var.as_tensor()).expect("composed grad");
                let scale = y.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-6);
                let diff = (x - y)?.abs()?.max_all()?.to_scalar::<f32>()?;
                // Over 300k logits, f32 summation error alone reaches ~1e-5 of the scale.
                let tol = if v > 10_000 { 1e-4 } else { 1e-5 };
                assert!(
                    diff <= tol * scale.max(1.0),
                    "{n}×{v} ∂{name}: {diff} (scale {scale})"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn a_frozen_head_gets_no_gradient_and_bad_targets_are_named() -> Result<()> {
        let dev = Device::Cpu;
        let h = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 8), &dev)?)?;
        let w = Tensor::randn(0f32, 1.0, (10, 8), &dev)?;
        let (lp, _) = head_logprobs(h.as_tensor(), &w, &[1, 2, 3, 9])?;
        let g = lp.sum_all()?.backward()?;
        assert!(g.get(h.as_tensor()).is_some() && g.get(&w).is_none());
        let e = head_logprobs(h.as_tensor(), &w, &[1, 2, 3, 10]).unwrap_err();
        assert!(e.to_string().contains("outside the vocabulary"), "{e}");
        Ok(())
    }
}
