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
    /// Use the fused op (fused_norm.rs) for f32. T5 keeps the composed ops: its v1.1/mT5
    /// activations are large enough that the f32 reduction order moves its log-probs ~1e-4 from
    /// transformers'.
    pub fused: bool,
}

impl RmsNorm {
    pub fn new(vb: VarBuilder, size: usize, eps: f64, kind: NormKind) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            eps,
            kind,
            fused: true,
        })
    }

    /// The same norm without the fused op.
    pub fn composed(self) -> Self {
        Self {
            fused: false,
            ..self
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        if self.fused && dtype == DType::F32 && self.weight.dtype() == DType::F32 {
            // One op with its own backward (fused_norm.rs); bf16 keeps the composed path, whose
            // cast points follow transformers'.
            let c = x.dim(D::Minus1)?;
            let op = super::fused_norm::FusedRmsNorm {
                eps: self.eps,
                one_plus: self.kind == NormKind::OnePlus,
            };
            return x
                .contiguous()?
                .reshape(((), c))?
                .apply_op2(&self.weight, op)?
                .reshape(x.shape());
        }
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
