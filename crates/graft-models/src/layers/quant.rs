//! A frozen, quantized linear weight (GGUF k-quants and legacy quants kept as stored, or NF4 as
//! bitsandbytes makes it) that still passes gradients to its input, for QLoRA-style training:
//! candle's `QMatMul` has no backward.
//! Forward and backward each dequantize the weight for the one matmul and drop it, so only the
//! quantized bytes stay resident between layers.
//! Shapes: x (…, in); W (out, in) quantized; y = x Wᵀ (…, out); ∂x = ∂y W.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor};

/// A frozen weight (out, in) held quantized.
#[derive(Debug)]
pub enum QuantWeight {
    /// A GGUF tensor as stored.
    Gguf(QTensor),
    /// NF4 (+ double quantization), bitsandbytes' format.
    Nf4(super::nf4::Nf4Tensor),
}

impl QuantWeight {
    /// The weight in f32 on `device`.
    pub fn dequantize(&self, device: &Device) -> Result<Tensor> {
        match self {
            QuantWeight::Gguf(q) => q.dequantize(device),
            QuantWeight::Nf4(q) => Tensor::from_vec(q.dequantize_vec(), q.shape, device),
        }
    }

    /// The weight in f32 as a row-major vector.
    pub fn dequantize_vec(&self) -> Result<Vec<f32>> {
        match self {
            QuantWeight::Gguf(q) => q.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1(),
            QuantWeight::Nf4(q) => Ok(q.dequantize_vec()),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            QuantWeight::Gguf(q) => q.storage_size_in_bytes(),
            QuantWeight::Nf4(q) => q.bytes(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct QuantLinearOp {
    pub weight: Arc<QuantWeight>,
}

impl QuantLinearOp {
    fn dense(&self) -> Result<Tensor> {
        self.weight.dequantize(&Device::Cpu)
    }
}

impl CustomOp1 for QuantLinearOp {
    fn name(&self) -> &'static str {
        "quant-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims().to_vec();
        let x = match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((start, end))) => {
                Tensor::from_slice(&v[start..end], dims.clone(), &Device::Cpu)?
            }
            _ => candle_core::bail!("quant-linear: needs a contiguous f32 input"),
        };
        let w = self.dense()?;
        let y = x.broadcast_matmul(&w.t()?)?;
        let shape = y.shape().clone();
        Ok((CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?), shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let w = self.dense()?.to_dtype(grad_res.dtype())?;
        Ok(Some(grad_res.broadcast_matmul(&w)?))
    }
}

/// `x Wᵀ` with W quantized; differentiable in x.
pub fn quant_matmul(x: &Tensor, weight: &Arc<QuantWeight>) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(candle_core::DType::F32)?.contiguous()?;
    x.apply_op1(QuantLinearOp {
        weight: weight.clone(),
    })?
    .to_dtype(dtype)
}
