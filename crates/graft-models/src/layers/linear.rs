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
}

#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub adapter: Option<Arc<dyn LinearAdapter>>,
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
        })
    }

    pub fn in_dim(&self) -> usize {
        self.weight.dims()[1]
    }

    pub fn out_dim(&self) -> usize {
        self.weight.dims()[0]
    }

    /// The layer without its adapter.
    pub fn base_forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.broadcast_matmul(&self.weight.t()?)?;
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
