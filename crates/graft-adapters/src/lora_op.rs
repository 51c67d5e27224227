//! A LoRA-wrapped frozen linear layer as one op: `y = x Wᵀ + b + s · u Bᵀ`, u = dropout(x) Aᵀ
//! computed before (see dropout_down.rs). Composed, the layer keeps the base output, the update
//! u Bᵀ, its scaled copy and their sum — four out-sized tensors per layer, ~2 GB over SmolLM2's 210
//! adapted layers at 1k tokens — where this op keeps only its output (x, u and B it references
//! anyway). W is frozen (dense or quantized, dequantized per use); b is frozen.
//!
//! Shapes: x (N, in); u (N, r); B (out, r); y (N, out).
//! Backward: ∂x = ∂y W; ∂u = s·∂y B; ∂B = s·∂yᵀ u.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use graft_models::layers::cpu_op::{input_f32, output_like};
use graft_models::layers::quant::QuantWeight;

#[derive(Debug, Clone)]
pub enum FrozenWeight {
    Dense(Tensor),
    Quantized(Arc<QuantWeight>),
}

impl FrozenWeight {
    fn f32(&self) -> Result<Tensor> {
        match self {
            FrozenWeight::Dense(w) => w.detach().to_dtype(DType::F32),
            FrozenWeight::Quantized(q) => q.dequantize(&Device::Cpu),
        }
    }
}

#[derive(Debug, Clone)]
struct LoraLinear {
    weight: FrozenWeight,
    bias: Option<Tensor>,
    scale: f64,
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "lora-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, u, b) = (
            input_f32("lora-linear", xs, xl)?,
            input_f32("lora-linear", us, ul)?,
            input_f32("lora-linear", bs, bl)?,
        );
        let mut y = (x.matmul(&self.weight.f32()?.t()?)? + (u.matmul(&b.t()?)? * self.scale)?)?;
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(&bias.detach().to_dtype(DType::F32)?)?;
        }
        let shape = y.shape().clone();
        let v = y.flatten_all()?.to_vec1::<f32>()?;
        Ok((output_like(v, xs), shape))
    }

    fn bwd(
        &self,
        x_in: &Tensor,
        u_in: &Tensor,
        b_in: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let f = |t: &Tensor| t.detach().to_dtype(DType::F32);
        let (u, b, g) = (f(u_in)?, f(b_in)?, f(grad)?);
        let dx = g.matmul(&self.weight.f32()?)?.to_dtype(x_in.dtype())?;
        let du = (g.matmul(&b)? * self.scale)?.to_dtype(u_in.dtype())?;
        let db = (g.t()?.matmul(&u)? * self.scale)?.to_dtype(b_in.dtype())?;
        Ok((Some(dx), Some(du), Some(db)))
    }
}

/// `x Wᵀ + bias + scale · u Bᵀ` over the last dim of x (…, in) → (…, out), W and bias frozen.
pub fn lora_linear(
    x: &Tensor,
    u: &Tensor,
    b: &Tensor,
    weight: FrozenWeight,
    bias: Option<Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (&k, lead) = dims
        .split_last()
        .ok_or_else(|| candle_core::Error::Msg("lora-linear: scalar input".into()))?;
    let n: usize = lead.iter().product();
    let x2 = x.reshape((n, k))?.contiguous()?;
    let u2 = u
        .reshape((n, u.dim(candle_core::D::Minus1)?))?
        .contiguous()?;
    let y = x2.apply_op3(
        &u2,
        &b.contiguous()?,
        LoraLinear {
            weight,
            bias,
            scale,
        },
    )?;
    let mut out = lead.to_vec();
    out.push(b.dim(0)?);
    y.reshape(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// Output and gradients (x, u, B) equal the composed layer, with a bias and leading dims.
    #[test]
    fn equals_the_composed_layer() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 6), &dev)?)?;
        let u = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 2), &dev)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, (5, 2), &dev)?)?;
        let w = Tensor::randn(0f32, 1.0, (5, 6), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, 5, &dev)?;
        let fused = lora_linear(
            x.as_tensor(),
            u.as_tensor(),
            b.as_tensor(),
            FrozenWeight::Dense(w.clone()),
            Some(bias.clone()),
            0.7,
        )?;
        let composed = (x
            .as_tensor()
            .broadcast_matmul(&w.t()?)?
            .broadcast_add(&bias)?
            + (u.as_tensor().broadcast_matmul(&b.as_tensor().t()?)? * 0.7)?)?;
        assert!((&fused - &composed)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
        let m = Tensor::randn(0f32, 1.0, (2, 3, 5), &dev)?;
        let (gf, gc) = (
            (fused * &m)?.sum_all()?.backward()?,
            (composed * &m)?.sum_all()?.backward()?,
        );
        for var in [&x, &u, &b] {
            let d = (gf.get(var.as_tensor()).unwrap() - gc.get(var.as_tensor()).unwrap())?;
            assert!(d.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
        }
        Ok(())
    }
}
