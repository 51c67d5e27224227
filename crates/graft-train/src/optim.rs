//! AdamW with decoupled weight decay, as `torch.optim.AdamW`: per step t,
//! `p ← p·(1 − lr·wd)`, `m ← β1·m + (1−β1)·g`, `v ← β2·v + (1−β2)·g²`,
//! `p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε)`. One-dimensional parameters (norms, biases) get no
//! decay by default, the usual grouping in transformers' Trainer.
//!
//! f32 variables are updated in place by one fused pass over (p, g, m, v) — no temporaries, both
//! cores — with the same f32 operations in the same order as the composed tensor version
//! (`update_composed`, kept for bf16/f16 variables and their f32 masters), so both give equal
//! results.

use std::sync::Mutex;

use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Result, Tensor, Var};
use candle_nn::VarMap;
use rayon::prelude::*;

pub struct AdamW {
    params: Vec<Param>,
    /// Variables left out by [`Self::restrict`]: saved with the others, never updated.
    fixed: Vec<(String, Var)>,
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
    /// Leading elements never updated (the old rows of an extended vocabulary under
    /// `new_rows_only`): their gradient is zeroed before clipping, and no update or decay
    /// touches them, so they stay bit-identical.
    frozen: usize,
    /// First and second moments, f32, in the variable's element order.
    m: Vec<f32>,
    v: Vec<f32>,
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
                let n = var.elem_count();
                Ok(Param {
                    name: name.clone(),
                    decay: var.rank() >= 2,
                    frozen: 0,
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                    master,
                    var,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            params,
            fixed: Vec::new(),
            beta1,
            beta2,
            eps,
            weight_decay,
            step: 0,
        })
    }

    /// Keeps only the variables `keep` accepts (`[train] trainable`), and freezes the first
    /// `frozen_rows(name)` rows of each (`new_rows_only`). Before any step or state restore.
    pub fn restrict(
        &mut self,
        keep: impl Fn(&str) -> bool,
        frozen_rows: impl Fn(&str) -> usize,
    ) -> Result<()> {
        let (kept, left): (Vec<Param>, Vec<Param>) = std::mem::take(&mut self.params)
            .into_iter()
            .partition(|p| keep(&p.name));
        self.params = kept;
        self.fixed = left.into_iter().map(|p| (p.name, p.var)).collect();
        if self.params.is_empty() {
            candle_core::bail!("no variable left to train");
        }
        for p in &mut self.params {
            let rows = frozen_rows(&p.name);
            if rows == 0 {
                continue;
            }
            let dims = p.var.dims();
            if dims.len() != 2 || rows > dims[0] {
                candle_core::bail!("`{}` {dims:?}: cannot freeze its first {rows} rows", p.name);
            }
            p.frozen = rows * dims[1];
        }
        Ok(())
    }

    /// Zeroes the gradient of frozen leading elements (before clipping, so they count for
    /// nothing in the norm either).
    pub fn mask_frozen(&self, grads: &mut [Tensor]) -> Result<()> {
        for (p, g) in self.params.iter().zip(grads.iter_mut()) {
            if p.frozen == 0 {
                continue;
            }
            let rows = p.frozen / g.dim(1)?;
            let tail = g.narrow(0, rows, g.dim(0)? - rows)?;
            let head = Tensor::zeros((rows, g.dim(1)?), g.dtype(), g.device())?;
            *g = Tensor::cat(&[&head, &tail], 0)?;
        }
        Ok(())
    }

    pub fn vars(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.params.iter().map(|p| (p.name.as_str(), &p.var))
    }

    /// Every variable, trained or left out by [`Self::restrict`].
    pub fn all_vars(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.vars()
            .chain(self.fixed.iter().map(|(n, v)| (n.as_str(), v)))
    }

    /// The weights at full precision (the f32 masters where kept), for checkpoints; variables
    /// left out of training too.
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
            .chain(
                self.fixed
                    .iter()
                    .map(|(n, v)| (n.clone(), v.as_tensor().clone())),
            )
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
            let g = &g.to_dtype(DType::F32)?.contiguous()?;
            let decay = match p.decay && self.weight_decay > 0.0 {
                true => Some(1.0 - lr * self.weight_decay),
                false => None,
            };
            if p.master.is_none() && p.var.dtype() == DType::F32 && p.var.is_contiguous() {
                let kernel = AdamWKernel {
                    skip: p.frozen,
                    m: Mutex::new(&mut p.m),
                    v: Mutex::new(&mut p.v),
                    decay: decay.map(|d| d as f32),
                    b1: b1 as f32,
                    b2: b2 as f32,
                    c1: (1.0 - b1) as f32,
                    c2: (1.0 - b2) as f32,
                    inv_bias2_sqrt: (1.0 / bias2_sqrt) as f32,
                    eps: self.eps as f32,
                    step_size: step_size as f32,
                };
                p.var.as_tensor().inplace_op2(g, &kernel)?;
                continue;
            }
            let mut w = match &p.master {
                Some(m) => m.clone(),
                None => p.var.as_tensor().detach(),
            };
            if let Some(d) = decay {
                w = (w * d)?;
            }
            let shape = p.var.shape().clone();
            let m = (Tensor::from_slice(&p.m, &shape, g.device())? * b1)? + (g * (1.0 - b1))?;
            let v =
                (Tensor::from_slice(&p.v, &shape, g.device())? * b2)? + (g.sqr()? * (1.0 - b2))?;
            let (m, v) = (m?, v?);
            let denom = ((v.sqrt()? / bias2_sqrt)? + self.eps)?;
            let mut w = (w - ((&m / denom)? * step_size)?)?;
            if p.frozen > 0 {
                let rows = p.frozen / w.dim(1)?;
                let old = match &p.master {
                    Some(m) => m.narrow(0, 0, rows)?,
                    None => p.var.as_tensor().narrow(0, 0, rows)?.detach(),
                };
                w = Tensor::cat(&[&old, &w.narrow(0, rows, w.dim(0)? - rows)?], 0)?;
            }
            p.m = m.flatten_all()?.to_vec1()?;
            p.v = v.flatten_all()?.to_vec1()?;
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
                let moment = |v: &[f32]| {
                    Tensor::from_slice(v, p.var.shape(), &candle_core::Device::Cpu)
                        .expect("a moment has its variable's element count")
                };
                let mut s = vec![
                    (format!("m.{}", p.name), moment(&p.m)),
                    (format!("v.{}", p.name), moment(&p.v)),
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
            let moment = |t: Tensor| -> Result<Vec<f32>> {
                if t.elem_count() != p.var.elem_count() {
                    candle_core::bail!(
                        "optimizer state for `{}`: {:?}, the variable is {:?}",
                        p.name,
                        t.dims(),
                        p.var.dims()
                    );
                }
                t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
            };
            p.m = moment(get(format!("m.{}", p.name))?)?;
            p.v = moment(get(format!("v.{}", p.name))?)?;
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

/// The fused in-place update of one f32 variable (see the module doc); the statements mirror
/// the composed version's tensor ops one for one.
struct AdamWKernel<'a> {
    /// Leading elements left untouched.
    skip: usize,
    m: Mutex<&'a mut Vec<f32>>,
    v: Mutex<&'a mut Vec<f32>>,
    decay: Option<f32>,
    b1: f32,
    b2: f32,
    /// 1 − β1, 1 − β2 (rounded from f64, as the composed ops' scalars are).
    c1: f32,
    c2: f32,
    inv_bias2_sqrt: f32,
    eps: f32,
    step_size: f32,
}

impl InplaceOp2 for AdamWKernel<'_> {
    fn name(&self) -> &'static str {
        "adamw"
    }

    fn cpu_fwd(&self, p: &mut CpuStorage, pl: &Layout, g: &CpuStorage, gl: &Layout) -> Result<()> {
        let (CpuStorage::F32(p), CpuStorage::F32(g)) = (p, g) else {
            candle_core::bail!("adamw: f32 variable and gradient expected")
        };
        let (Some((pa, pb)), Some((ga, gb))) = (pl.contiguous_offsets(), gl.contiguous_offsets())
        else {
            candle_core::bail!("adamw: contiguous variable and gradient expected")
        };
        let (p, g) = (&mut p[pa..pb], &g[ga..gb]);
        let mut m = self
            .m
            .lock()
            .map_err(|_| candle_core::Error::Msg("adamw: poisoned".into()))?;
        let mut v = self
            .v
            .lock()
            .map_err(|_| candle_core::Error::Msg("adamw: poisoned".into()))?;
        if g.len() != p.len() || m.len() != p.len() || v.len() != p.len() || self.skip > p.len() {
            candle_core::bail!("adamw: {} weights, {} gradients", p.len(), g.len());
        }
        let s = self.skip;
        let (p, g, m, v) = (&mut p[s..], &g[s..], &mut m[s..], &mut v[s..]);
        const CHUNK: usize = 1 << 14;
        let (b1, b2, c1, c2) = (self.b1, self.b2, self.c1, self.c2);
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| {
                for (((w, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
                    if let Some(d) = self.decay {
                        *w *= d;
                    }
                    *m = *m * b1 + g * c1;
                    *v = *v * b2 + g * g * c2;
                    let denom = v.sqrt() * self.inv_bias2_sqrt + self.eps;
                    *w -= *m / denom * self.step_size;
                }
            });
        Ok(())
    }
}

/// Global L2 norm of `grads`; scales them to `max_norm` when above it (torch's clip_grad_norm_,
/// which multiplies by `max_norm / (norm + 1e-6)`). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: Option<f64>) -> Result<f64> {
    let mut sq = 0.0f64;
    for g in grads.iter() {
        // Summed in f64 straight from the gradient's values (no squared copy).
        let values = graft_models::layers::cpu_op::f32_values(g)?;
        sq += values
            .par_chunks(1 << 14)
            .map(|c| c.iter().map(|&x| x as f64 * x as f64).sum::<f64>())
            .collect::<Vec<_>>()
            .iter()
            .sum::<f64>();
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The fused in-place update follows torch.optim.AdamW's formula (evaluated here in f64)
    /// over three steps, for a decayed matrix and an undecayed vector, odd sizes included.
    #[test]
    fn fused_update_follows_the_formula() -> Result<()> {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let shapes = [("a.weight", vec![37usize, 19]), ("b.bias", vec![70001])];
        for (name, shape) in &shapes {
            varmap.get(
                shape.as_slice(),
                name,
                candle_nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
                DType::F32,
                &dev,
            )?;
        }
        let (b1, b2, eps, wd, lr) = (0.9, 0.95, 1e-8, 0.1, 1e-2);
        let mut opt = AdamW::new(&varmap, b1, b2, eps, wd)?;
        let start: Vec<Vec<f64>> = opt
            .vars()
            .map(|(_, v)| Ok(v.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?))
            .collect::<Result<_>>()?;
        let mut reference = start.clone();
        let mut moments: Vec<(Vec<f64>, Vec<f64>)> = start
            .iter()
            .map(|p| (vec![0.0; p.len()], vec![0.0; p.len()]))
            .collect();
        for step in 1..=3 {
            let grads: Vec<Tensor> = opt
                .vars()
                .map(|(_, v)| Tensor::randn(0f32, 1.0, v.shape(), &dev))
                .collect::<Result<_>>()?;
            opt.update(&grads, lr)?;
            for (i, ((name, _), g)) in opt.vars().zip(&grads).enumerate() {
                let g: Vec<f64> = g.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
                let decay = name.ends_with("weight");
                let (m, v) = &mut moments[i];
                for j in 0..g.len() {
                    let p = &mut reference[i][j];
                    if decay {
                        *p *= 1.0 - lr * wd;
                    }
                    m[j] = b1 * m[j] + (1.0 - b1) * g[j];
                    v[j] = b2 * v[j] + (1.0 - b2) * g[j] * g[j];
                    let denom = (v[j] / (1.0 - b2.powi(step))).sqrt() + eps;
                    *p -= lr / (1.0 - b1.powi(step)) * m[j] / denom;
                }
            }
        }
        for ((name, var), want) in opt.vars().zip(&reference) {
            let got: Vec<f32> = var.flatten_all()?.to_vec1()?;
            for (j, (&a, &b)) in got.iter().zip(want).enumerate() {
                assert!(
                    (a as f64 - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "{name}[{j}]: {a} vs {b}"
                );
            }
        }
        Ok(())
    }

    /// `restrict`: a left-out variable and the frozen leading rows of a kept one never move,
    /// in f32 (fused update) and bf16 (composed update with an f32 master); the other rows do.
    #[test]
    fn restricted_variables_and_frozen_rows_stay() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::BF16] {
            let varmap = VarMap::new();
            let init = candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            };
            varmap.get((6, 4), "embed_tokens.weight", init, dtype, &dev)?;
            varmap.get((4, 4), "layer.weight", init, dtype, &dev)?;
            let mut opt = AdamW::new(&varmap, 0.9, 0.95, 1e-8, 0.1)?;
            opt.restrict(|n| n.starts_with("embed"), |_| 4)?;
            assert_eq!(opt.vars().count(), 1);
            assert_eq!(opt.all_vars().count(), 2);
            let before: Vec<Vec<Vec<f32>>> = opt
                .all_vars()
                .map(|(_, v)| v.to_dtype(DType::F32)?.to_vec2())
                .collect::<Result<_>>()?;
            for _ in 0..3 {
                let mut grads = vec![Tensor::ones((6, 4), DType::F32, &dev)?];
                opt.mask_frozen(&mut grads)?;
                let g: Vec<Vec<f32>> = grads[0].to_vec2()?;
                assert!(g[..4].iter().flatten().all(|x| *x == 0.0));
                opt.update(&grads, 1e-2)?;
            }
            let after: Vec<Vec<Vec<f32>>> = opt
                .all_vars()
                .map(|(_, v)| v.to_dtype(DType::F32)?.to_vec2())
                .collect::<Result<_>>()?;
            assert_eq!(after[0][..4], before[0][..4], "{dtype:?}: frozen rows");
            assert_ne!(after[0][4..], before[0][4..], "{dtype:?}: new rows");
            assert_eq!(after[1], before[1], "{dtype:?}: left-out variable");
            assert_eq!(opt.weights().len(), 2);
        }
        Ok(())
    }
}
