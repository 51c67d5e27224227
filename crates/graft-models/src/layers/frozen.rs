//! `x Wᵀ` for a frozen weight: the backward computes only the input gradient. candle's matmul
//! backward always computes the weight gradient as well (an (in, out) product per layer per step),
//! which LoRA/QLoRA training then throws away; this op skips it.
//! Shapes: x (m, in); W (out, in); y (m, out); ∂x = ∂y W.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

#[derive(Debug, Clone, Copy)]
pub struct FrozenMatmul;

impl CustomOp2 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_l: &Layout,
        w: &CpuStorage,
        w_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = x_l.shape().dims2()?;
        let (n, k2) = w_l.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("frozen-matmul: x has {k} features, W expects {k2}");
        }
        let y = x.matmul(w, (1, m, n, k), x_l, &w_l.transpose(0, 1)?)?;
        Ok((y, Shape::from((m, n))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad_y.matmul(w)?), None))
    }
}

/// `x Wᵀ` for a 2-D x (m, in); W gets no gradient.
pub fn frozen_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.apply_op2(w, FrozenMatmul)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn output_and_input_gradient_equal_the_composed_matmul() -> Result<()> {
        let dev = Device::Cpu;
        for (dims, out) in [
            (vec![1usize, 1, 3], 5usize),
            (vec![2, 7, 9], 4),
            (vec![6, 16], 33),
        ] {
            let k = *dims.last().unwrap();
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, dims.clone(), &dev)?)?;
            let w = Tensor::randn(0f32, 1.0, (out, k), &dev)?;
            let y = crate::layers::linear::matmul_t(&x, &w)?;
            let y_ref = x.broadcast_matmul(&w.t()?)?;
            let probe = Tensor::randn(0f32, 1.0, y_ref.dims(), &dev)?;
            assert_eq!(y.dims(), y_ref.dims());
            let dy = (&y - &y_ref)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(dy < 1e-5, "{dims:?}: {dy}");
            let g = (y * &probe)?.sum_all()?.backward()?;
            let g_ref = (y_ref * &probe)?.sum_all()?.backward()?;
            let (gx, gx_ref) = (g.get(&x).unwrap(), g_ref.get(&x).unwrap());
            let d = (gx - gx_ref)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            let scale = gx_ref.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(d <= 1e-5 * scale.max(1.0), "{dims:?}: {d}");
            assert!(g.get(&w).is_none(), "the frozen weight got a gradient");
        }
        Ok(())
    }
}
