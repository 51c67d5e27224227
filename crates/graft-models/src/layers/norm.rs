//! RMSNorm, written with plain ops so gradients reach both input and weight
//! (`candle_nn::ops::rms_norm` detaches). Statistics are computed in f32 as transformers does.
//! Shapes: x (…, C), weight (C).

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::config::NormKind;

#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
    pub kind: NormKind,
}

impl RmsNorm {
    pub fn new(vb: VarBuilder, size: usize, eps: f64, kind: NormKind) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            eps,
            kind,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let inv_rms = (xf.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?
            .sqrt()?
            .recip()?;
        let normed = xf.broadcast_mul(&inv_rms)?;
        match self.kind {
            // Llama: cast back first, then scale by the weight in the model dtype.
            NormKind::Plain => normed.to_dtype(dtype)?.broadcast_mul(&self.weight),
            // Gemma: scale by (1 + w) in f32, then cast.
            NormKind::OnePlus => {
                let scale = (self.weight.to_dtype(DType::F32)? + 1.0)?;
                normed.broadcast_mul(&scale)?.to_dtype(dtype)
            }
        }
    }
}
