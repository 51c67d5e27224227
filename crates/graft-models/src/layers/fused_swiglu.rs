//! The gated products of SwiGLU, silu(gate) ⊙ up, and GeGLU, gelu_tanh(gate) ⊙ up (Gemma's
//! `gelu_pytorch_tanh`), as one op with its backward (f32): the composed version keeps act(gate)
//! and its intermediates alive for the backward; this one keeps only gate and up and recomputes.
//!
//! Shapes: gate, up, out (…, I). SiLU, σ = sigmoid(gate): out = gate·σ ⊙ up;
//! d_gate = dy ⊙ up ⊙ σ(1 + gate(1 − σ)); d_up = dy ⊙ gate·σ. GELU (tanh form), with
//! t = tanh(k(g + 0.044715 g³)), k = √(2/π): act = ½g(1 + t);
//! act' = ½(1 + t) + ½g(1 − t²)·k(1 + 3·0.044715 g²).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::config::Activation;

/// The op; `act` is SiLU or the tanh GELU (exact-erf GELU stays composed).
#[derive(Debug, Clone, Copy)]
pub struct FusedGlu {
    pub act: Activation,
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("fused-swiglu: needs contiguous f32 inputs"),
    }
}

// exp through cpu_op's polynomial, not libm: the loops over these vectorise (libm's tanhf and
// expf were an eighth of Gemma-3's prefill).
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + super::cpu_op::exp(-x))
}

/// tanh x = 1 − 2 / (e^{2x} + 1): within 1.2e-7 of libm's (absolute), ±1 past |x| ≈ 44.
#[inline(always)]
fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (super::cpu_op::exp(2.0 * x) + 1.0)
}

const GELU_K: f32 = 0.797_884_6; // √(2/π)
const GELU_C: f32 = 0.044_715;

/// act(g)·u.
#[inline(always)]
pub(crate) fn forward(act: Activation, g: f32, u: f32) -> f32 {
    match act {
        Activation::GeluTanh => 0.5 * g * (1.0 + tanh(GELU_K * g * (1.0 + GELU_C * g * g))) * u,
        _ => g * sigmoid(g) * u,
    }
}

/// (∂/∂g, ∂/∂u) of act(g)·u times the upstream gradient d.
pub(crate) fn backward(act: Activation, g: f32, u: f32, d: f32) -> (f32, f32) {
    match act {
        Activation::GeluTanh => {
            let t = tanh(GELU_K * g * (1.0 + GELU_C * g * g));
            let a = 0.5 * g * (1.0 + t);
            let da =
                0.5 * (1.0 + t) + 0.5 * g * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * GELU_C * g * g);
            (d * u * da, d * a)
        }
        _ => {
            let s = sigmoid(g);
            (d * u * s * (1.0 + g * (1.0 - s)), d * g * s)
        }
    }
}

impl CustomOp2 for FusedGlu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, u) = (slice(gs, gl)?, slice(us, ul)?);
        if g.len() != u.len() {
            candle_core::bail!("fused-swiglu: gate and up differ in size");
        }
        // Runs of values in parallel, the activation chosen once per run: the inner loops are
        // plain slices, which vectorise.
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(4096)
            .zip(g.par_chunks(4096).zip(u.par_chunks(4096)))
            .for_each(|(o, (g, u))| match self.act {
                Activation::GeluTanh => {
                    for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                        *o = forward(Activation::GeluTanh, g, u);
                    }
                }
                act => {
                    for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                        *o = forward(act, g, u);
                    }
                }
            });
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let flat = |t: &Tensor| t.contiguous()?.flatten_all()?.to_vec1::<f32>();
        let (g, u, d) = (flat(gate)?, flat(up)?, flat(dy)?);
        let (dg, du): (Vec<f32>, Vec<f32>) = g
            .par_iter()
            .zip(u.par_iter().zip(d.par_iter()))
            .map(|(&g, (&u, &d))| backward(self.act, g, u, d))
            .unzip();
        Ok((
            Some(Tensor::from_vec(dg, gate.shape(), gate.device())?),
            Some(Tensor::from_vec(du, up.shape(), up.device())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use graft_testkit::max_abs_diff;

    /// The polynomial tanh against libm's, over GELU's range and past saturation.
    #[test]
    fn tanh_matches_libm() {
        let mut worst = 0f32;
        for i in 0..400_001 {
            let x = -100.0 + 200.0 * i as f32 / 400_000.0;
            worst = worst.max((tanh(x) - x.tanh()).abs());
        }
        assert!(worst < 2e-7, "absolute error {worst}");
    }

    /// SwiGLU and GeGLU against candle's silu / (tanh) gelu times up, values and gradients.
    #[test]
    fn equals_the_composed_product_and_its_gradients() {
        let dev = Device::Cpu;
        let g = Var::from_tensor(&(Tensor::randn(0f32, 3.0, (4, 9, 24), &dev).unwrap())).unwrap();
        let u = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 9, 24), &dev).unwrap()).unwrap();
        let w = Tensor::randn(0f32, 1.0, (4, 9, 24), &dev).unwrap();
        for act in [Activation::Silu, Activation::GeluTanh] {
            let fused = g
                .as_tensor()
                .apply_op2(u.as_tensor(), FusedGlu { act })
                .unwrap();
            let a = match act {
                Activation::Silu => g.as_tensor().silu().unwrap(),
                _ => g.as_tensor().gelu().unwrap(),
            };
            let plain = (a * u.as_tensor()).unwrap();
            assert!(max_abs_diff(&fused, &plain) < 1e-5, "{act:?}");
            let gf = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gp = (plain * &w).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&g, &u] {
                let d = max_abs_diff(gf.get(v).unwrap(), gp.get(v).unwrap());
                assert!(d < 1e-4, "{act:?}: {d}");
            }
        }
    }
}
