//! DoRA (Liu et al. 2024, arXiv 2402.09353): the LoRA-updated weight split into direction and
//! magnitude, `W' = m ⊙ (W + s·B·A) / ‖W + s·B·A‖` with row norms (one per output feature), the
//! norm treated as a constant (detached, paper §4.3) — as PEFT's `DoraLinearLayer`:
//! `y = x Wᵀ + b + (m/‖·‖ − 1) ⊙ (x' Wᵀ) + (m/‖·‖) ⊙ s·(x' Aᵀ) Bᵀ` with x' = dropout(x).
//! Shapes: m (out); A (r, in); B (out, r).

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{DType, Result, Tensor, D};
use graft_models::layers::linear::{matmul_t, Linear, LinearAdapter};
use rand::rngs::StdRng;

use crate::config::LoraConfig;
use crate::peft_format::key_magnitude;
use crate::AdapterError;

#[derive(Debug)]
pub struct Dora {
    pub a: Tensor,
    pub b: Tensor,
    pub magnitude: Tensor,
    pub scale: f64,
    pub dropout: f64,
}

/// ‖row‖₂ of a weight (out, in) → (out), computed in f32.
pub fn row_norms(w: &Tensor) -> Result<Tensor> {
    w.to_dtype(DType::F32)?
        .sqr()?
        .sum(D::Minus1)?
        .sqrt()?
        .to_dtype(w.dtype())
}

impl Dora {
    pub fn new(
        linear: &Linear,
        a: Tensor,
        b: Tensor,
        cfg: &LoraConfig,
        tensors: &HashMap<String, Tensor>,
        name: &str,
    ) -> std::result::Result<Self, AdapterError> {
        let key = key_magnitude(name);
        let magnitude = tensors
            .get(&key)
            .ok_or_else(|| AdapterError::Tensor(key.clone(), "missing (use_dora is set)".into()))?;
        if magnitude.dims() != [linear.out_dim()] {
            return Err(AdapterError::Tensor(
                key,
                format!(
                    "shape {:?}, expected [{}]",
                    magnitude.dims(),
                    linear.out_dim()
                ),
            ));
        }
        Ok(Self {
            a,
            b,
            magnitude: magnitude.to_dtype(linear.weight.dtype())?,
            scale: cfg.scale(),
            dropout: cfg.lora_dropout,
        })
    }
}

impl LinearAdapter for Dora {
    fn forward(&self, x: &Tensor, base: &Linear, rng: Option<&Mutex<StdRng>>) -> Result<Tensor> {
        let y = base.base_forward(x)?;
        let x = crate::lora::adapter_input(x, self.dropout, rng)?;
        let ba = self.b.matmul(&self.a)?; // (out, in)
        let w = base.dense_weight()?;
        let norm = row_norms(&(&w + (ba.detach() * self.scale)?)?)?.detach();
        let mag_scale = (&self.magnitude / norm)?; // (out)
                                                   // x' Wᵀ through the base layer (quantized or not), without its bias.
        let base_part = match &base.bias {
            Some(b) => base.base_forward(&x)?.broadcast_sub(b)?,
            None => base.base_forward(&x)?,
        };
        let lora_part = (matmul_t(&matmul_t(&x, &self.a)?, &self.b)? * self.scale)?;
        let delta = (base_part.broadcast_mul(&(&mag_scale - 1.0)?)?
            + lora_part.broadcast_mul(&mag_scale)?)?;
        y + delta
    }
}
