//! SwiGLU's product silu(gate) ⊙ up as one op with its backward (f32): the composed version keeps
//! silu(gate) and its sigmoid alive for the backward; this one keeps only gate and up and
//! recomputes σ(gate) there.
//!
//! Shapes: gate, up, out (…, I). With σ = sigmoid(gate): out = gate·σ ⊙ up;
//! d_gate = dy ⊙ up ⊙ σ(1 + gate(1 − σ)); d_up = dy ⊙ gate·σ.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

#[derive(Debug, Clone, Copy)]
pub struct FusedSwiGlu;

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("fused-swiglu: needs contiguous f32 inputs"),
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// silu(g)·u.
pub(crate) fn forward(g: f32, u: f32) -> f32 {
    g * sigmoid(g) * u
}

/// (∂/∂g, ∂/∂u) of silu(g)·u times the upstream gradient d.
pub(crate) fn backward(g: f32, u: f32, d: f32) -> (f32, f32) {
    let s = sigmoid(g);
    (d * u * s * (1.0 + g * (1.0 - s)), d * g * s)
}

impl CustomOp2 for FusedSwiGlu {
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
        let out = g
            .par_iter()
            .zip(u.par_iter())
            .map(|(&g, &u)| forward(g, u))
            .collect();
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
            .map(|(&g, (&u, &d))| backward(g, u, d))
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

    #[test]
    fn equals_the_composed_product_and_its_gradients() {
        let dev = Device::Cpu;
        let g = Var::from_tensor(&(Tensor::randn(0f32, 3.0, (4, 9, 24), &dev).unwrap())).unwrap();
        let u = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 9, 24), &dev).unwrap()).unwrap();
        let w = Tensor::randn(0f32, 1.0, (4, 9, 24), &dev).unwrap();
        let fused = g.as_tensor().apply_op2(u.as_tensor(), FusedSwiGlu).unwrap();
        let plain = (g.as_tensor().silu().unwrap() * u.as_tensor()).unwrap();
        assert!(max_abs_diff(&fused, &plain) < 1e-5);
        let gf = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gp = (plain * &w).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&g, &u] {
            assert!(max_abs_diff(gf.get(v).unwrap(), gp.get(v).unwrap()) < 1e-4);
        }
    }
}
