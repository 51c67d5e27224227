//! Gated MLP: `down(act(gate(x)) * up(x))` — SwiGLU with SiLU, GeGLU with GELU.
//! Shapes: x (B, T, C) → (B, T, C) through (B, T, I).

use std::sync::Mutex;

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use rand::rngs::StdRng;

use super::linear::Linear;
use crate::config::Activation;

#[derive(Debug, Clone)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
    pub act: Activation,
}

impl Mlp {
    pub fn new(
        vb: VarBuilder,
        hidden: usize,
        intermediate: usize,
        bias: bool,
        act: Activation,
    ) -> Result<Self> {
        Ok(Self {
            gate_proj: Linear::new(vb.pp("gate_proj"), hidden, intermediate, bias)?,
            up_proj: Linear::new(vb.pp("up_proj"), hidden, intermediate, bias)?,
            down_proj: Linear::new(vb.pp("down_proj"), intermediate, hidden, bias)?,
            act,
        })
    }

    pub fn forward(&self, x: &Tensor, rng: Option<&Mutex<StdRng>>) -> Result<Tensor> {
        let gate = self.gate_proj.forward(x, rng)?;
        if self.act != Activation::Gelu && gate.dtype() == candle_core::DType::F32 {
            // act(gate) ⊙ up as one op (fused_swiglu.rs).
            let up = self.up_proj.forward(x, rng)?;
            let op = super::fused_swiglu::FusedGlu { act: self.act };
            let h = gate.contiguous()?.apply_op2(&up.contiguous()?, op)?;
            return self.down_proj.forward(&h, rng);
        }
        let gate = match self.act {
            Activation::Silu => gate.silu()?,
            Activation::GeluTanh => gate.gelu()?,
            Activation::Gelu => gate.gelu_erf()?,
        };
        self.down_proj
            .forward(&(gate * self.up_proj.forward(x, rng)?)?, rng)
    }
}
