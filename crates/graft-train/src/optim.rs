//! AdamW with decoupled weight decay, as `torch.optim.AdamW`: per step t,
//! `p ← p·(1 − lr·wd)`, `m ← β1·m + (1−β1)·g`, `v ← β2·v + (1−β2)·g²`,
//! `p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε)`. One-dimensional parameters (norms, biases) get no
//! decay by default, the usual grouping in transformers' Trainer.

use candle_core::{DType, Result, Tensor, Var};
use candle_nn::VarMap;

pub struct AdamW {
    params: Vec<Param>,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Updates taken so far.
    pub step: usize,
}

struct Param {
    name: String,
    var: Var,
    decay: bool,
    m: Tensor,
    v: Tensor,
    /// f32 master copy when the variable is bf16/f16: updates accumulate here, the variable gets
    /// the rounded result (small updates are not lost to bf16's 8-bit mantissa).
    master: Option<Tensor>,
}

impl AdamW {
    /// Every variable of `varmap`, sorted by name so state order never depends on hashing.
    pub fn new(
        varmap: &VarMap,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    ) -> Result<Self> {
        let vars = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("varmap poisoned".into()))?;
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        let params = names
            .into_iter()
            .map(|name| {
                let var = vars[name].clone();
                let master = match var.dtype() {
                    DType::F32 => None,
                    _ => Some(var.as_tensor().to_dtype(DType::F32)?),
                };
                let zeros = var.as_tensor().zeros_like()?.to_dtype(DType::F32)?;
                Ok(Param {
                    name: name.clone(),
                    decay: var.rank() >= 2,
                    m: zeros.clone(),
                    v: zeros,
                    master,
                    var,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            params,
            beta1,
            beta2,
            eps,
            weight_decay,
            step: 0,
        })
    }

    pub fn vars(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.params.iter().map(|p| (p.name.as_str(), &p.var))
    }

    /// The weights at full precision (the f32 masters where kept), for checkpoints.
    pub fn weights(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.master
                        .clone()
                        .unwrap_or_else(|| p.var.as_tensor().clone()),
                )
            })
            .collect()
    }

    /// One update with gradients `grads` (same order as [`Self::vars`]; any float dtype).
    pub fn update(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        let step_size = lr / (1.0 - b1.powi(t));
        let bias2_sqrt = (1.0 - b2.powi(t)).sqrt();
        for (p, g) in self.params.iter_mut().zip(grads) {
            let g = &g.to_dtype(DType::F32)?;
            let mut w = match &p.master {
                Some(m) => m.clone(),
                None => p.var.as_tensor().detach(),
            };
            if p.decay && self.weight_decay > 0.0 {
                w = (w * (1.0 - lr * self.weight_decay))?;
            }
            p.m = ((&p.m * b1)? + (g * (1.0 - b1))?)?;
            p.v = ((&p.v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let denom = ((p.v.sqrt()? / bias2_sqrt)? + self.eps)?;
            let w = (w - ((&p.m / denom)? * step_size)?)?;
            match &mut p.master {
                Some(m) => {
                    p.var.set(&w.to_dtype(p.var.dtype())?)?;
                    *m = w;
                }
                None => p.var.set(&w)?,
            }
        }
        Ok(())
    }

    /// Optimizer state as named tensors (`m.<param>`, `v.<param>`, `master.<param>`) for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .flat_map(|p| {
                let mut s = vec![
                    (format!("m.{}", p.name), p.m.clone()),
                    (format!("v.{}", p.name), p.v.clone()),
                ];
                s.extend(p.master.clone().map(|m| (format!("master.{}", p.name), m)));
                s
            })
            .collect()
    }

    /// Restores [`Self::state`] and the step count.
    pub fn load_state(
        &mut self,
        state: &std::collections::HashMap<String, Tensor>,
        step: usize,
    ) -> Result<()> {
        for p in &mut self.params {
            let get = |k: String| {
                state
                    .get(&k)
                    .cloned()
                    .ok_or_else(|| candle_core::Error::Msg(format!("optimizer state has no `{k}`")))
            };
            p.m = get(format!("m.{}", p.name))?;
            p.v = get(format!("v.{}", p.name))?;
            if p.master.is_some() {
                let m = get(format!("master.{}", p.name))?;
                p.var.set(&m.to_dtype(p.var.dtype())?)?;
                p.master = Some(m);
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Global L2 norm of `grads`; scales them to `max_norm` when above it (torch's clip_grad_norm_,
/// which multiplies by `max_norm / (norm + 1e-6)`). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: Option<f64>) -> Result<f64> {
    let mut sq = 0.0f64;
    for g in grads.iter() {
        sq += g
            .sqr()?
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
    }
    let norm = sq.sqrt();
    if let Some(max) = max_norm {
        let coef = max / (norm + 1e-6);
        if coef < 1.0 {
            for g in grads.iter_mut() {
                *g = (&*g * coef)?;
            }
        }
    }
    Ok(norm)
}
