//! The projections of fused_block.rs: y = x Wᵀ (+ s·(x Aᵀ) Bᵀ under LoRA) on plain vectors with
//! direct GEMM calls, and their backward — W's gradient only when W is trained, A's and B's under
//! LoRA, the input's always.
//!
//! Shapes: x (n, in); W (out, in); A (r, in); B (out, r); z = x Aᵀ (n, r); y (n, out).

use candle_core::{Result, Tensor};

use super::cpu_op::{f32_values, gemm_par, F32Values};
use super::side_grads::is_trainable;

/// A projection's weight (out, in) — or its frozen quantized form (QLoRA; `w` is then a
/// placeholder of the same shape), dequantized for each product that reads it and dropped after,
/// so one dense weight exists at a time — and LoRA's (A, B, scale) when it has one.
#[derive(Debug, Clone)]
pub struct Proj {
    pub w: Tensor,
    pub quantized: Option<std::sync::Arc<super::quant::QuantWeight>>,
    pub lora: Option<(Tensor, Tensor, f64)>,
}

impl Proj {
    /// The projection's values (a quantized W stays quantized until used).
    pub(crate) fn values(&self) -> Result<ProjValues<'_>> {
        Ok(ProjValues {
            w: match &self.quantized {
                Some(q) => Weight::Quantized(q),
                None => Weight::Dense(f32_values(&self.w)?),
            },
            lora: match &self.lora {
                Some((a, b, s)) => Some((f32_values(a)?, f32_values(b)?, *s as f32)),
                None => None,
            },
        })
    }
}

/// W's values, or its quantized form.
pub(crate) enum Weight<'a> {
    Dense(F32Values<'a>),
    Quantized(&'a super::quant::QuantWeight),
}

impl Weight<'_> {
    /// `f` on W's dense values (dequantized for this call when quantized).
    fn with<R>(&self, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
        Ok(match self {
            Weight::Dense(v) => f(v),
            Weight::Quantized(q) => f(&q.dequantize_vec()?),
        })
    }
}

/// A projection's values: W, and LoRA's A, B, scale.
pub(crate) struct ProjValues<'a> {
    pub w: Weight<'a>,
    pub lora: Option<(F32Values<'a>, F32Values<'a>, f32)>,
}

impl ProjValues<'_> {
    /// y (n × out) = x Wᵀ (+ s·(x Aᵀ) Bᵀ), and x Aᵀ (n × r) for the backward.
    pub fn forward(
        &self,
        x: &[f32],
        n: usize,
        in_dim: usize,
        out_dim: usize,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let mut y = self.w.with(|w| linear(x, w, n, in_dim, out_dim))?;
        let Some((a, b, scale)) = &self.lora else {
            return Ok((y, Vec::new()));
        };
        let r = a.len() / in_dim;
        let z = linear(x, a, n, in_dim, r);
        gemm_par((n, out_dim, r), &mut y, true, (&z, r, 1), (b, 1, r), *scale);
        Ok((y, z))
    }

    /// dx (+)= the input gradient; the gradients of the projection's trained tensors (W; A, B)
    /// pushed to `grads`. z = the forward's x Aᵀ.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        proj: &Proj,
        (x, z, dy): (&[f32], &[f32], &[f32]),
        (n, in_dim, out_dim): (usize, usize, usize),
        dx: &mut [f32],
        acc: bool,
        grads: &mut Vec<(Tensor, Vec<f32>)>,
    ) -> Result<()> {
        if is_trainable(proj.w.id()) {
            grads.push((proj.w.clone(), linear_dw(dy, x, n, in_dim, out_dim)));
        }
        self.w
            .with(|w| linear_dx(dy, w, n, in_dim, out_dim, dx, acc))?;
        let (Some((a, b, scale)), Some((ta, tb, _))) = (&self.lora, &proj.lora) else {
            return Ok(());
        };
        let r = a.len() / in_dim;
        // y += s·z Bᵀ: dB = s·dyᵀ z; dz = s·dy B; dA = dzᵀ x; dx += dz A.
        if is_trainable(tb.id()) {
            let mut db = vec![0f32; out_dim * r];
            gemm_par(
                (out_dim, r, n),
                &mut db,
                false,
                (dy, 1, out_dim),
                (z, r, 1),
                *scale,
            );
            grads.push((tb.clone(), db));
        }
        let mut dz = vec![0f32; n * r];
        gemm_par(
            (n, r, out_dim),
            &mut dz,
            false,
            (dy, out_dim, 1),
            (b, r, 1),
            *scale,
        );
        if is_trainable(ta.id()) {
            grads.push((ta.clone(), linear_dw(&dz, x, n, in_dim, r)));
        }
        linear_dx(&dz, a, n, in_dim, r, dx, true);
        Ok(())
    }
}

/// y (n × out) = x (n × in) Wᵀ for W (out, in).
pub(crate) fn linear(x: &[f32], w: &[f32], n: usize, in_dim: usize, out_dim: usize) -> Vec<f32> {
    let mut y = vec![0f32; n * out_dim];
    gemm_par(
        (n, out_dim, in_dim),
        &mut y,
        false,
        (x, in_dim, 1),
        (w, 1, in_dim),
        1.0,
    );
    y
}

/// dx (n × in) (+)= dy (n × out) W for W (out, in).
pub(crate) fn linear_dx(
    dy: &[f32],
    w: &[f32],
    n: usize,
    in_dim: usize,
    out_dim: usize,
    dx: &mut [f32],
    acc: bool,
) {
    gemm_par(
        (n, in_dim, out_dim),
        dx,
        acc,
        (dy, out_dim, 1),
        (w, in_dim, 1),
        1.0,
    );
}

/// dW (out × in) = dyᵀ x.
pub(crate) fn linear_dw(
    dy: &[f32],
    x: &[f32],
    n: usize,
    in_dim: usize,
    out_dim: usize,
) -> Vec<f32> {
    let mut dw = vec![0f32; out_dim * in_dim];
    gemm_par(
        (out_dim, in_dim, n),
        &mut dw,
        false,
        (dy, 1, out_dim),
        (x, in_dim, 1),
        1.0,
    );
    dw
}
