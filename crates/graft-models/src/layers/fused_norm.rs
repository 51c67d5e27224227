//! RMSNorm as one op with its backward (f32): the composed version (square, mean, add, sqrt,
//! reciprocal, two products) keeps five (N, C) intermediates alive until the backward and runs
//! each as its own pass; this one reads x once forward and once backward, keeping nothing but
//! its inputs.
//!
//! Shapes: x (N, C) rows, weight (C). With r = 1/√(mean(x²) + ε), x̂ = x·r and s = w (Llama) or
//! 1 + w (Gemma): y = x̂ ⊙ s. Backward: g = dy ⊙ s; dx = r·(g − x̂·mean(g ⊙ x̂)); dw = Σ_rows dy ⊙ x̂.

use super::cpu_op::f32_values;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

#[derive(Debug, Clone)]
pub struct FusedRmsNorm {
    pub eps: f64,
    /// Gemma's (1 + w) scale.
    pub one_plus: bool,
}

fn slices<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{op}: needs contiguous f32 inputs"),
    }
}

impl FusedRmsNorm {
    /// 1/√(mean(x²) + ε), accumulated in f64: torch's vectorised f32 reduction is far more
    /// accurate than a sequential f32 sum, and T5 v1.1's large activations show the difference.
    fn inv_rms(&self, row: &[f32]) -> f32 {
        let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / row.len() as f64;
        (1.0 / (ms + self.eps).sqrt()) as f32
    }

    /// out = x · inv_rms(x) · s per row of x (rows in parallel); s = [`Self::scale`].
    pub(crate) fn forward_rows(&self, x: &[f32], s: &[f32], out: &mut [f32]) {
        let c = s.len();
        out.par_chunks_exact_mut(c)
            .zip(x.par_chunks_exact(c))
            .for_each(|(o, row)| {
                let r = self.inv_rms(row);
                for ((o, &v), &s) in o.iter_mut().zip(row).zip(s) {
                    *o = v * r * s;
                }
            });
    }

    /// The input gradient of [`Self::forward_rows`] into dx (added to it with `accumulate`), and
    /// the gradient of the weight returned.
    pub(crate) fn backward_rows(
        &self,
        x: &[f32],
        s: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        accumulate: bool,
    ) -> Vec<f32> {
        let c = s.len();
        // Rows in parallel, in fixed blocks of 64 rows whose dw partial sums are added in block
        // order: the result does not depend on how the work was split between threads, so
        // training stays bit-reproducible (resume equals an uninterrupted run).
        const BLOCK: usize = 64;
        let partials: Vec<Vec<f32>> = dx
            .par_chunks_mut(c * BLOCK)
            .zip(x.par_chunks(c * BLOCK).zip(dy.par_chunks(c * BLOCK)))
            .map(|(dblk, (xblk, gblk))| {
                let mut dw = vec![0f32; c];
                for (d, (row, g_row)) in dblk
                    .chunks_exact_mut(c)
                    .zip(xblk.chunks_exact(c).zip(gblk.chunks_exact(c)))
                {
                    let r = self.inv_rms(row);
                    let mut dot = 0f32;
                    for j in 0..c {
                        let xh = row[j] * r;
                        dot += g_row[j] * s[j] * xh;
                        dw[j] += g_row[j] * xh;
                    }
                    let mean = dot / c as f32;
                    for j in 0..c {
                        let v = r * (g_row[j] * s[j] - row[j] * r * mean);
                        d[j] = if accumulate { d[j] + v } else { v };
                    }
                }
                dw
            })
            .collect();
        let mut dw = vec![0f32; c];
        for p in &partials {
            dw.iter_mut().zip(p).for_each(|(a, b)| *a += b);
        }
        dw
    }

    pub(crate) fn scale(&self, w: &[f32]) -> Vec<f32> {
        match self.one_plus {
            true => w.iter().map(|v| 1.0 + v).collect(),
            false => w.to_vec(),
        }
    }
}

impl CustomOp2 for FusedRmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (
            slices("fused-rms-norm", xs, xl)?,
            slices("fused-rms-norm", ws, wl)?,
        );
        let mut out = vec![0f32; x.len()];
        self.forward_rows(x, &self.scale(w), &mut out);
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let c = w.dim(0)?;
        // Borrowed, not copied, when already contiguous f32.
        let (xc, dyc) = (x.contiguous()?, dy.contiguous()?);
        let (xv, dyv) = (f32_values(&xc)?, f32_values(&dyc)?);
        let wv = w.to_vec1::<f32>()?;
        let mut dx = vec![0f32; xv.len()];
        let dw = self.backward_rows(&xv, &self.scale(&wv), &dyv, &mut dx, false);
        let dx = Tensor::from_vec(dx, x.shape(), x.device())?;
        let dw = Tensor::from_vec(dw, c, w.device())?;
        Ok((Some(dx), Some(dw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};
    use graft_testkit::max_abs_diff;

    fn composed(x: &Tensor, w: &Tensor, eps: f64, one_plus: bool) -> Result<Tensor> {
        let r = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
        let s = if one_plus { (w + 1.0)? } else { w.clone() };
        x.broadcast_mul(&r)?.broadcast_mul(&s)
    }

    #[test]
    fn equals_the_composed_norm_and_its_gradients() {
        let dev = Device::Cpu;
        for one_plus in [false, true] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (5, 7, 16), &dev).unwrap()).unwrap();
            let w = Var::from_tensor(&Tensor::randn(0f32, 0.5, 16, &dev).unwrap()).unwrap();
            let up = Tensor::randn(0f32, 1.0, (5, 7, 16), &dev).unwrap();
            let op = FusedRmsNorm {
                eps: 1e-5,
                one_plus,
            };
            let fused = x.as_tensor().apply_op2(w.as_tensor(), op).unwrap();
            let plain = composed(x.as_tensor(), w.as_tensor(), 1e-5, one_plus).unwrap();
            assert!(max_abs_diff(&fused, &plain) < 1e-5);
            let gf = (fused * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let gp = (plain * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for v in [&x, &w] {
                let (a, b) = (gf.get(v).unwrap(), gp.get(v).unwrap());
                assert!(
                    max_abs_diff(a, b) < 1e-4,
                    "one_plus {one_plus}: {}",
                    max_abs_diff(a, b)
                );
            }
        }
    }
}
