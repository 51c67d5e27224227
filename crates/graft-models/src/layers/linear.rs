//! `y = x Wᵀ + b` with HF's layout: `weight` is (out, in), optionally wrapped by an adapter (LoRA,
//! DoRA, … from graft-adapters) that sees the input and the base layer.
//! Shapes: x (…, in) → y (…, out).

use std::sync::{Arc, Mutex};

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use rand::rngs::StdRng;

/// An adapter on one linear layer. `rng` is `Some` in training forwards (for adapter dropout).
pub trait LinearAdapter: Send + Sync + std::fmt::Debug {
    fn forward(&self, x: &Tensor, base: &Linear, rng: Option<&Mutex<StdRng>>) -> Result<Tensor>;

    /// (A (r, in), B (out, r), scale) when the adapter is plain LoRA without dropout, which
    /// fused_block.rs computes itself.
    fn plain_lora(&self) -> Option<(Tensor, Tensor, f64)> {
        None
    }
}

/// A model whose linear layers adapters can wrap, listed with their HF module paths.
pub trait Linears {
    fn linears_mut(&mut self) -> Vec<(String, &mut Linear)>;

    /// Whole weights PEFT's `modules_to_save` can replace (embeddings, an untied head), by
    /// module path; linear layers' weights are reached through [`Self::linears_mut`].
    fn embeddings_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        Vec::new()
    }
}

#[derive(Debug, Clone)]
pub struct Linear {
    /// The weight (out, in); a zero-stride placeholder of that shape when `quantized` holds it.
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub adapter: Option<Arc<dyn LinearAdapter>>,
    /// A frozen quantized weight used instead of `weight` (QLoRA: GGUF or NF4 bases).
    pub quantized: Option<Arc<super::quant::QuantWeight>>,
}

impl Linear {
    pub fn new(vb: VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            adapter: None,
            quantized: None,
        })
    }

    pub fn in_dim(&self) -> usize {
        self.weight.dims()[1]
    }

    pub fn out_dim(&self) -> usize {
        self.weight.dims()[0]
    }

    /// The weight as a dense tensor (dequantized when kept quantized).
    pub fn dense_weight(&self) -> Result<Tensor> {
        match &self.quantized {
            Some(q) => q
                .dequantize(self.weight.device())?
                .to_dtype(self.weight.dtype()),
            None => Ok(self.weight.clone()),
        }
    }

    /// The layer as fused_block.rs takes it: an f32 (or frozen quantized) weight without bias,
    /// bare or under plain LoRA.
    pub fn fused_proj(&self) -> Option<super::fused_block::Proj> {
        if self.bias.is_some() || self.weight.dtype() != candle_core::DType::F32 {
            return None;
        }
        let lora = match &self.adapter {
            None => None,
            Some(a) => Some(a.plain_lora()?),
        };
        Some(super::fused_block::Proj {
            w: self.weight.clone(),
            quantized: self.quantized.clone(),
            lora,
        })
    }

    /// The layer without its adapter.
    pub fn base_forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.quantized {
            Some(q) => super::quant::quant_matmul(x, q)?,
            None => matmul_t(x, &self.weight)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    pub fn forward(&self, x: &Tensor, rng: Option<&Mutex<StdRng>>) -> Result<Tensor> {
        match &self.adapter {
            Some(a) => a.forward(x, self, rng),
            None => self.base_forward(x),
        }
    }
}

/// `x Wᵀ` over the last dim of x (W is (out, in)). The leading dims are flattened so that W's
/// gradient is one (out, in) product, not a broadcast batch of them; a frozen W (neither a variable
/// nor computed from one) goes through [`frozen_matmul`](super::frozen::frozen_matmul), whose
/// backward skips W's gradient.
pub fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let Some((&k, lead)) = dims.split_last() else {
        candle_core::bail!("linear: input is a scalar")
    };
    let x2 = x.reshape((lead.iter().product::<usize>(), k))?;
    let y = if w.track_op() {
        x2.matmul(&w.t()?)?
    } else {
        super::frozen::frozen_matmul(&x2, w)?
    };
    let mut out = lead.to_vec();
    out.push(w.dim(0)?);
    y.reshape(out)
}
