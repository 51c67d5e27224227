//! SLTrain (Han et al. 2024, "SLTrain: a sparse plus low-rank approach for parameter and memory
//! efficient pretraining", arXiv 2406.02214; the authors' `SpLoRaLinear`): a linear layer's weight
//! is `W = (α/r)·B A + S` — a low-rank product plus a sparse matrix S whose support is fixed at
//! random (δ·out·in entries drawn uniformly without replacement over the whole matrix) and whose
//! values train. There is no dense weight: the base layer's own weight is ignored (pretraining from
//! scratch), only its bias kept. Init as the authors': A ~ U(±1/√in) (kaiming_uniform, a = √5),
//! B = 0 (so W starts as S), S values ~ U(±1/√in). Their defaults: r = 128, α = 32, δ = 0.03
//! (60M Llama; r 256 / α 16 at 130M–350M).
//!
//! Stored as a PEFT-style adapter: `adapter_config.json` with `peft_type = "SLTRAIN"`, `r`,
//! `lora_alpha`, `sparse_density`, `sparse_seed`; tensors `…lora_A.weight`, `…lora_B.weight` and
//! `…sparse_values` (the support is redrawn from the seed and the module name, so it is not stored).
//! Shapes: A (r, in), B (out, r), values (nnz), support (nnz) flat row-major indices into (out, in).

use std::sync::Mutex;

use candle_core::{DType, Result, Tensor};
use graft_models::layers::linear::{matmul_t, Linear, LinearAdapter};
use rand::{rngs::StdRng, Rng, SeedableRng};

#[derive(Debug)]
pub struct SlTrain {
    pub a: Tensor,
    pub b: Tensor,
    pub values: Tensor,
    /// (nnz) u32 flat indices, sorted.
    pub support: Tensor,
    pub scale: f64,
}

/// The fixed random support of module `name`: `floor(density·out·in)` distinct flat indices,
/// sorted, a pure function of (seed, name, shape, density).
pub fn support(seed: u64, name: &str, out: usize, inp: usize, density: f64) -> Vec<u32> {
    let total = out * inp;
    let nnz = ((density * total as f64) as usize).min(total);
    // FNV-1a of the name, mixed with the seed.
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
        (h ^ c as u64).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = StdRng::seed_from_u64(seed ^ h);
    let mut all: Vec<u32> = (0..total as u32).collect();
    for i in 0..nnz {
        let j = rng.random_range(i..total);
        all.swap(i, j);
    }
    all.truncate(nnz);
    all.sort_unstable();
    all
}

impl SlTrain {
    /// The layer's weight (out, in): scale·B A + S.
    pub fn weight(&self) -> Result<Tensor> {
        let (out, inp) = (self.b.dim(0)?, self.a.dim(1)?);
        let sparse = Tensor::zeros(out * inp, self.values.dtype(), self.values.device())?
            .index_add(&self.support, &self.values, 0)?
            .reshape((out, inp))?;
        (self.b.matmul(&self.a)? * self.scale)? + sparse
    }
}

impl LinearAdapter for SlTrain {
    fn forward(&self, x: &Tensor, base: &Linear, _rng: Option<&Mutex<StdRng>>) -> Result<Tensor> {
        let y = matmul_t(x, &self.weight()?.to_dtype(x.dtype())?)?;
        match &base.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

pub fn key_values(module: &str) -> String {
    format!("{}{module}.sparse_values", crate::peft_format::PREFIX)
}

/// Fresh values for a support of `nnz` entries: U(±1/√in).
pub fn init_values(nnz: usize, inp: usize, rng: &mut StdRng) -> Vec<f32> {
    let bound = 1.0 / (inp as f32).sqrt();
    (0..nnz).map(|_| rng.random_range(-bound..bound)).collect()
}

/// The support as a tensor.
pub fn support_tensor(s: &[u32], device: &candle_core::Device) -> Result<Tensor> {
    Tensor::from_slice(s, s.len(), device)?.to_dtype(DType::U32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn support_is_fixed_distinct_and_of_the_density() {
        let s = support(3, "model.layers.0.mlp.up_proj", 40, 25, 0.03);
        assert_eq!(s.len(), 30);
        assert!(s.windows(2).all(|w| w[0] < w[1]) && *s.last().unwrap() < 1000);
        assert_eq!(s, support(3, "model.layers.0.mlp.up_proj", 40, 25, 0.03));
        assert_ne!(s, support(3, "model.layers.1.mlp.up_proj", 40, 25, 0.03));
    }

    /// The layer is x (scale·B A + S)ᵀ, and every part gets a gradient.
    #[test]
    fn weight_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let (out, inp, r) = (6usize, 5usize, 2usize);
        let s = support(0, "m", out, inp, 0.3);
        let a = Var::from_tensor(&Tensor::randn(0f32, 1.0, (r, inp), &dev)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, (out, r), &dev)?)?;
        let v = Var::from_tensor(&Tensor::randn(0f32, 1.0, s.len(), &dev)?)?;
        let layer = SlTrain {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            values: v.as_tensor().clone(),
            support: support_tensor(&s, &dev)?,
            scale: 1.5,
        };
        let w = layer.weight()?;
        let dense: Vec<Vec<f32>> = (b.as_tensor().matmul(a.as_tensor())? * 1.5)?.to_vec2()?;
        let got: Vec<Vec<f32>> = w.to_vec2()?;
        let vals: Vec<f32> = v.as_tensor().to_vec1()?;
        for i in 0..out {
            for j in 0..inp {
                let sparse = s
                    .iter()
                    .position(|&k| k as usize == i * inp + j)
                    .map_or(0.0, |p| vals[p]);
                assert!((got[i][j] - dense[i][j] - sparse).abs() < 1e-5);
            }
        }
        let g = w.sqr()?.sum_all()?.backward()?;
        for var in [&a, &b, &v] {
            let n = g
                .get(var.as_tensor())
                .unwrap()
                .abs()?
                .sum_all()?
                .to_scalar::<f32>()?;
            assert!(n > 0.0);
        }
        Ok(())
    }
}
