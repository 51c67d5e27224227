//! Rotary position embeddings in HF's "rotate half" layout (the GGUF loader un-permutes Llama's
//! interleaved q/k weights into this layout).
//! Shapes: positions (B, T); inv_freq (D/2); cos/sin (B, 1, T, D); x (B, H, T, D).

use candle_core::{DType, Result, Tensor, D};
use rayon::prelude::*;

/// cos and sin of `position * inv_freq`, computed in f32 as transformers does, duplicated to `D`.
pub fn cos_sin(inv_freq: &Tensor, positions: &Tensor, dtype: DType) -> Result<(Tensor, Tensor)> {
    let (b, t) = positions.dims2()?;
    let half = inv_freq.dim(0)?;
    let pos = positions.to_dtype(DType::F32)?.reshape((b, t, 1))?;
    let angles = pos.broadcast_mul(&inv_freq.reshape((1, 1, half))?)?;
    let angles = Tensor::cat(&[&angles, &angles], D::Minus1)?.unsqueeze(1)?;
    Ok((
        angles.cos()?.to_dtype(dtype)?,
        angles.sin()?.to_dtype(dtype)?,
    ))
}

/// `x * cos + rotate_half(x) * sin` with `rotate_half([x1, x2]) = [-x2, x1]`.
pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// [`apply`] as one op with its backward (f32, contiguous x): the composed version runs seven
/// ops (two narrows, a negation, a concatenation, two products, a sum) and keeps their results
/// for the backward. With x = [x1, x2] halves: y = [x1·c1 − x2·s1, x2·c2 + x1·s2];
/// backward dx = dy ⊙ cos + Rᵀ(dy ⊙ sin), Rᵀ([a, b]) = [b, −a].
/// Rotates one head's row in place by its position's cos/sin rows (D values each), or by the
/// transpose with `inverse` (the backward): with halves [a, b], y = [a·c1 − b·s1, b·c2 + a·s2];
/// inverse [a·c1 + b·s2, b·c2 − a·s1].
pub(crate) fn rotate_in_place(row: &mut [f32], c: &[f32], s: &[f32], inverse: bool) {
    let h = row.len() / 2;
    for j in 0..h {
        let (a, b) = (row[j], row[j + h]);
        if inverse {
            row[j] = a * c[j] + b * s[j + h];
            row[j + h] = b * c[j + h] - a * s[j];
        } else {
            row[j] = a * c[j] - b * s[j];
            row[j + h] = b * c[j + h] + a * s[j + h];
        }
    }
}

#[derive(Debug, Clone)]
struct FusedRope {
    /// (B, T, D) values of cos and sin (their head axis is broadcast).
    cos: Vec<f32>,
    sin: Vec<f32>,
    heads: usize,
    t: usize,
}

impl FusedRope {
    /// x (or dy) rotated row by row, forward or (`inverse`) backward; every (b, h, t) row takes
    /// its (b, t) cos/sin rows.
    fn rows(&self, x: &[f32], d: usize, inverse: bool) -> Vec<f32> {
        let mut out = x.to_vec();
        out.par_chunks_exact_mut(d)
            .enumerate()
            .for_each(|(r, row)| {
                // Row r is (b, h, t) in x's (B, H, T) order; cos/sin rows are (b, t).
                let (b, ti) = (r / (self.heads * self.t), r % self.t);
                let cr = (b * self.t + ti) * d;
                rotate_in_place(row, &self.cos[cr..cr + d], &self.sin[cr..cr + d], inverse);
            });
        out
    }
}

impl candle_core::CustomOp1 for FusedRope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let x = match (s, l.contiguous_offsets()) {
            (candle_core::CpuStorage::F32(v), Some((a, b))) => &v[a..b],
            _ => candle_core::bail!("fused-rope: needs contiguous f32 input"),
        };
        let out = self.rows(x, l.shape().dims()[3], false);
        Ok((candle_core::CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let g = dy.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let dx = self.rows(&g, x.dim(3)?, true);
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// [`apply`], fused for contiguous f32 (B, H, T, D) with cos/sin (B, 1, T, D); composed otherwise.
pub fn apply_fused(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (b, heads, t, d) = x.dims4()?;
    if x.dtype() != DType::F32 || cos.dims() != [b, 1, t, d] || d % 2 == 1 {
        return apply(x, cos, sin);
    }
    let flat = |c: &Tensor| {
        c.to_dtype(DType::F32)?
            .contiguous()?
            .flatten_all()?
            .to_vec1::<f32>()
    };
    let op = FusedRope {
        cos: flat(cos)?,
        sin: flat(sin)?,
        heads,
        t,
    };
    x.contiguous()?.apply_op1(op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use graft_testkit::max_abs_diff;

    #[test]
    fn fused_equals_composed_with_gradients() {
        let dev = Device::Cpu;
        let (b, h, t, d) = (2, 3, 5, 8);
        let inv: Tensor = Tensor::new(&[1.0f32, 0.3, 0.1, 0.01], &dev).unwrap();
        let pos = Tensor::new(&[[0u32, 1, 2, 3, 4], [7, 8, 9, 10, 11]], &dev).unwrap();
        let (cos, sin) = cos_sin(&inv, &pos, DType::F32).unwrap();
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, h, t, d), &dev).unwrap()).unwrap();
        let w = Tensor::randn(0f32, 1.0, (b, h, t, d), &dev).unwrap();
        let fused = apply_fused(x.as_tensor(), &cos, &sin).unwrap();
        let plain = apply(x.as_tensor(), &cos, &sin).unwrap();
        assert!(max_abs_diff(&fused, &plain) < 1e-6);
        let gf = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gp = (plain * &w).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_abs_diff(gf.get(&x).unwrap(), gp.get(&x).unwrap()) < 1e-6);
        // T = 1 (decoding) too.
        let x1 = x.as_tensor().narrow(2, 0, 1).unwrap().contiguous().unwrap();
        let (c1, s1) = (cos.narrow(2, 0, 1).unwrap(), sin.narrow(2, 0, 1).unwrap());
        assert!(
            max_abs_diff(
                &apply_fused(&x1, &c1, &s1).unwrap(),
                &apply(&x1, &c1, &s1).unwrap()
            ) < 1e-6
        );
    }
}
