//! LoRA's down projection with its dropout, `u = dropout(x) Aᵀ`, as one op that keeps no dropped
//! copy of x: the composed version holds the keep mask and the dropped input — two x-sized
//! tensors per adapted layer (for all-linear LoRA on SmolLM2 at 1k tokens, ~0.7 GB over its 30
//! layers) — while this op keeps only a seed and redraws the same mask in the backward. x itself is
//! kept by the frozen base layer anyway.
//!
//! Shapes: x (N, in); A (r, in); u (N, r). Mask m ∈ {0, 1/(1−p)} per element of x, drawn from a
//! seed taken from the training RNG. ∂x = (∂u A) ⊙ m; ∂A = ∂uᵀ (x ⊙ m).

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};
use graft_models::layers::cpu_op::{input_f32, output_like};
use rand::{rngs::StdRng, Rng, SeedableRng};

#[derive(Debug, Clone)]
struct DropoutDown {
    p: f64,
    seed: u64,
}

impl DropoutDown {
    fn mask(&self, n: usize, dims: (usize, usize)) -> Result<Tensor> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let scale = (1.0 / (1.0 - self.p)) as f32;
        let keep: Vec<f32> = (0..n)
            .map(|_| {
                if rng.random::<f64>() >= self.p {
                    scale
                } else {
                    0.0
                }
            })
            .collect();
        Tensor::from_vec(keep, dims, &Device::Cpu)
    }
}

impl CustomOp2 for DropoutDown {
    fn name(&self) -> &'static str {
        "lora-dropout-down"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        a_s: &CpuStorage,
        al: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, a) = (
            input_f32("dropout-down", xs, xl)?,
            input_f32("dropout-down", a_s, al)?,
        );
        let dims = x.dims2()?;
        let u = (x * self.mask(dims.0 * dims.1, dims)?)?.matmul(&a.t()?)?;
        let shape = u.shape().clone();
        let v = u.flatten_all()?.to_vec1::<f32>()?;
        Ok((output_like(v, xs), shape))
    }

    fn bwd(
        &self,
        x_in: &Tensor,
        a_in: &Tensor,
        _u: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let f = |t: &Tensor| t.detach().to_dtype(DType::F32);
        let (x, a, g) = (f(x_in)?, f(a_in)?, f(grad)?);
        let dims = x.dims2()?;
        let m = self.mask(dims.0 * dims.1, dims)?;
        let dx = (g.matmul(&a)? * &m)?.to_dtype(x_in.dtype())?;
        let da = g.t()?.matmul(&(x * m)?)?.to_dtype(a_in.dtype())?;
        Ok((Some(dx), Some(da)))
    }
}

/// `dropout(x) Aᵀ` over the last dim of x (…, in) → (…, r), the mask's seed drawn from `rng`.
pub fn dropout_down(x: &Tensor, a: &Tensor, p: f64, rng: &Mutex<StdRng>) -> Result<Tensor> {
    let seed = rng
        .lock()
        .map_err(|_| candle_core::Error::Msg("dropout RNG poisoned".into()))?
        .random::<u64>();
    let dims = x.dims().to_vec();
    let (&k, lead) = dims
        .split_last()
        .ok_or_else(|| candle_core::Error::Msg("dropout-down: scalar input".into()))?;
    let x2 = x
        .reshape((lead.iter().product::<usize>(), k))?
        .contiguous()?;
    let u = x2.apply_op2(&a.contiguous()?, DropoutDown { p, seed })?;
    let mut out = lead.to_vec();
    out.push(a.dim(0)?);
    u.reshape(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// Output and gradients equal the composed dropout → matmul with the same mask.
    #[test]
    fn equals_composed_dropout_then_matmul() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 5, 7), &dev)?)?;
        let a = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 7), &dev)?)?;
        let rng = Mutex::new(StdRng::seed_from_u64(9));
        let u = dropout_down(x.as_tensor(), a.as_tensor(), 0.3, &rng)?;
        // The same seed, composed.
        let seed = StdRng::seed_from_u64(9).random::<u64>();
        let m = DropoutDown { p: 0.3, seed }
            .mask(70, (10, 7))?
            .reshape((2, 5, 7))?;
        let zeros = m
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .filter(|&&v| v == 0.0)
            .count();
        assert!(zeros > 5 && zeros < 40, "{zeros} of 70 dropped");
        let reference = (x.as_tensor() * &m)?.broadcast_matmul(&a.as_tensor().t()?)?;
        assert!((&u - &reference)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-6);
        let w = Tensor::randn(0f32, 1.0, (2, 5, 3), &dev)?;
        let (gf, gc) = (
            (u * &w)?.sum_all()?.backward()?,
            (reference * &w)?.sum_all()?.backward()?,
        );
        for var in [&x, &a] {
            let d = (gf.get(var.as_tensor()).unwrap() - gc.get(var.as_tensor()).unwrap())?;
            assert!(d.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
        }
        Ok(())
    }
}
