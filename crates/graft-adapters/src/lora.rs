//! LoRA (Hu et al. 2021, arXiv 2106.09685) and rsLoRA (Kalajdzievski 2023, arXiv 2312.03732):
//! `y = x Wᵀ + b + s · (dropout(x) Aᵀ) Bᵀ` with A (r, in), B (out, r), and s = α/r (α/√r for
//! rsLoRA), as PEFT's `lora.Linear`. New adapters start with A ~ U(±1/√in) (PEFT's
//! kaiming_uniform(a=√5)) and B = 0, so training starts from the base model.
//! Shapes: x (…, in) → (…, r) → (…, out).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarMap;
use graft_models::layers::linear::{matmul_t, Linear, LinearAdapter, Linears};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::config::LoraConfig;
use crate::peft_format::{key_a, key_b};
use crate::AdapterError;

#[derive(Debug)]
pub struct Lora {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
    pub dropout: f64,
}

/// The adapter branch's input: `x` with dropout in training forwards (PEFT applies it before A).
pub(crate) fn adapter_input(x: &Tensor, p: f64, rng: Option<&Mutex<StdRng>>) -> Result<Tensor> {
    match rng {
        Some(rng) if p > 0.0 => graft_models::layers::attention::dropout(x, p, rng),
        _ => Ok(x.clone()),
    }
}

impl LinearAdapter for Lora {
    fn forward(&self, x: &Tensor, base: &Linear, rng: Option<&Mutex<StdRng>>) -> Result<Tensor> {
        let down = match rng {
            // The fused op keeps no dropped copy of x for the backward.
            Some(rng) if self.dropout > 0.0 => {
                crate::dropout_down::dropout_down(x, &self.a, self.dropout, rng)?
            }
            _ => matmul_t(x, &self.a)?,
        };
        // A frozen base (the usual case): one op that keeps no base output or update copies.
        let frozen = match (&base.quantized, base.weight.track_op()) {
            (Some(q), _) => Some(crate::lora_op::FrozenWeight::Quantized(q.clone())),
            (None, false) => Some(crate::lora_op::FrozenWeight::Dense(base.weight.clone())),
            (None, true) => None,
        };
        match frozen {
            Some(w) => {
                crate::lora_op::lora_linear(x, &down, &self.b, w, base.bias.clone(), self.scale)
            }
            None => {
                let delta = matmul_t(&down, &self.b)?;
                base.base_forward(x)? + (delta * self.scale)?
            }
        }
    }

    fn plain_lora(&self) -> Option<(Tensor, Tensor, f64)> {
        (self.dropout == 0.0).then(|| (self.a.clone(), self.b.clone(), self.scale))
    }
}

/// Wraps every linear layer `cfg` targets with the LoRA weights in `tensors` (PEFT keys). Returns
/// the wrapped module names; an adapter with no matching module, or a missing or misshapen tensor,
/// is an error naming it.
pub fn attach(
    model: &mut dyn Linears,
    cfg: &LoraConfig,
    tensors: &HashMap<String, Tensor>,
) -> std::result::Result<Vec<String>, AdapterError> {
    let wrapped = attach_lora(model, cfg, tensors)?;
    crate::saved::attach_saved(
        model,
        &cfg.modules_to_save().map_err(AdapterError::Config)?,
        tensors,
    )?;
    Ok(wrapped)
}

/// The LoRA/DoRA part of [`attach`].
fn attach_lora(
    model: &mut dyn Linears,
    cfg: &LoraConfig,
    tensors: &HashMap<String, Tensor>,
) -> std::result::Result<Vec<String>, AdapterError> {
    cfg.validate().map_err(AdapterError::Config)?;
    let task_layers = mtlora_task_layers(cfg, model);
    let mut wrapped = Vec::new();
    for (name, linear) in model.linears_mut() {
        if !cfg.targets(&name).map_err(AdapterError::Config)? {
            continue;
        }
        let get =
            |key: String, shape: (usize, usize)| -> std::result::Result<Tensor, AdapterError> {
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| AdapterError::Tensor(key.clone(), "missing".into()))?;
                if t.dims() != [shape.0, shape.1] {
                    return Err(AdapterError::Tensor(
                        key,
                        format!("shape {:?}, expected {:?}", t.dims(), [shape.0, shape.1]),
                    ));
                }
                Ok(t.to_dtype(linear.weight.dtype())?)
            };
        let a = get(key_a(&name), (cfg.r, linear.in_dim()))?;
        let b = get(key_b(&name), (linear.out_dim(), cfg.r))?;
        let task_names = cfg.task_names();
        let adapter: Arc<dyn LinearAdapter> = if !task_names.is_empty() {
            let mut tasks = Vec::new();
            if crate::mtlora::is_task_module(&name, &task_layers) {
                for t in &task_names {
                    tasks.push((
                        get(
                            crate::mtlora::key_task_a(&name, t),
                            (cfg.task_r(), linear.in_dim()),
                        )?,
                        get(
                            crate::mtlora::key_task_b(&name, t),
                            (linear.out_dim(), cfg.task_r()),
                        )?,
                    ));
                }
            }
            let shared = Lora {
                a,
                b,
                scale: cfg.scale(),
                dropout: cfg.lora_dropout,
            };
            Arc::new(crate::mtlora::MtLora { shared, tasks })
        } else if let Some(density) = cfg.sparse_density() {
            let support = crate::sltrain::support(
                cfg.sparse_seed(),
                &name,
                linear.out_dim(),
                linear.in_dim(),
                density,
            );
            let key = crate::sltrain::key_values(&name);
            let values = tensors
                .get(&key)
                .ok_or_else(|| AdapterError::Tensor(key.clone(), "missing".into()))?;
            if values.dims() != [support.len()] {
                return Err(AdapterError::Tensor(
                    key,
                    format!(
                        "shape {:?}, expected [{}] (density × out × in)",
                        values.dims(),
                        support.len()
                    ),
                ));
            }
            Arc::new(crate::sltrain::SlTrain {
                a,
                b,
                values: values.to_dtype(linear.weight.dtype())?,
                support: crate::sltrain::support_tensor(&support, linear.weight.device())?,
                scale: cfg.scale(),
            })
        } else if cfg.use_dora {
            Arc::new(crate::dora::Dora::new(linear, a, b, cfg, tensors, &name)?)
        } else {
            Arc::new(Lora {
                a,
                b,
                scale: cfg.scale(),
                dropout: cfg.lora_dropout,
            })
        };
        linear.adapter = Some(adapter);
        wrapped.push(name);
    }
    if wrapped.is_empty() {
        return Err(AdapterError::Config(format!(
            "target_modules {:?} matches no layer of the model",
            cfg.target_modules
        )));
    }
    Ok(wrapped)
}

/// Fresh trainable adapter weights for every targeted layer, as variables in `varmap` under PEFT's
/// keys (seeded: A ~ U(±1/√in), B = 0; DoRA magnitudes = the base rows' norms; SLTrain's sparse
/// values U(±1/√in)), then attached.
pub fn init_trainable(
    model: &mut dyn Linears,
    cfg: &LoraConfig,
    varmap: &VarMap,
    seed: u64,
) -> std::result::Result<Vec<String>, AdapterError> {
    cfg.validate().map_err(AdapterError::Config)?;
    let task_layers = mtlora_task_layers(cfg, model);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tensors = HashMap::new();
    let mut names: Vec<(String, usize, usize, Tensor)> = Vec::new();
    for (name, linear) in model.linears_mut() {
        if cfg.targets(&name).map_err(AdapterError::Config)? {
            names.push((
                name,
                linear.in_dim(),
                linear.out_dim(),
                linear.dense_weight()?,
            ));
        }
    }
    let mut data = varmap
        .data()
        .lock()
        .map_err(|_| AdapterError::Config("varmap poisoned".into()))?;
    for (name, in_dim, out_dim, weight) in names {
        let bound = 1.0 / (in_dim as f64).sqrt();
        let a: Vec<f32> = (0..cfg.r * in_dim)
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        let a = Var::from_tensor(
            &Tensor::from_vec(a, (cfg.r, in_dim), &Device::Cpu)?.to_dtype(weight.dtype())?,
        )?;
        let b = Var::from_tensor(&Tensor::zeros(
            (out_dim, cfg.r),
            weight.dtype(),
            &Device::Cpu,
        )?)?;
        tensors.insert(key_a(&name), a.as_tensor().clone());
        tensors.insert(key_b(&name), b.as_tensor().clone());
        data.insert(key_a(&name), a);
        data.insert(key_b(&name), b);
        if crate::mtlora::is_task_module(&name, &task_layers) {
            for t in cfg.task_names() {
                let a: Vec<f32> = (0..cfg.task_r() * in_dim)
                    .map(|_| rng.random_range(-bound..bound) as f32)
                    .collect();
                let a = Var::from_tensor(
                    &Tensor::from_vec(a, (cfg.task_r(), in_dim), &Device::Cpu)?
                        .to_dtype(weight.dtype())?,
                )?;
                let b = Var::from_tensor(&Tensor::zeros(
                    (out_dim, cfg.task_r()),
                    weight.dtype(),
                    &Device::Cpu,
                )?)?;
                for (key, v) in [
                    (crate::mtlora::key_task_a(&name, &t), a),
                    (crate::mtlora::key_task_b(&name, &t), b),
                ] {
                    tensors.insert(key.clone(), v.as_tensor().clone());
                    data.insert(key, v);
                }
            }
        }
        if let Some(density) = cfg.sparse_density() {
            let nnz =
                crate::sltrain::support(cfg.sparse_seed(), &name, out_dim, in_dim, density).len();
            let v = crate::sltrain::init_values(nnz, in_dim, &mut rng);
            let v = Var::from_tensor(
                &Tensor::from_vec(v, nnz, &Device::Cpu)?.to_dtype(weight.dtype())?,
            )?;
            tensors.insert(crate::sltrain::key_values(&name), v.as_tensor().clone());
            data.insert(crate::sltrain::key_values(&name), v);
        }
        if cfg.use_dora {
            let m = Var::from_tensor(&crate::dora::row_norms(&weight)?)?;
            tensors.insert(
                crate::peft_format::key_magnitude(&name),
                m.as_tensor().clone(),
            );
            data.insert(crate::peft_format::key_magnitude(&name), m);
        }
    }
    drop(data);
    let wrapped = attach_lora(model, cfg, &tensors)?;
    crate::saved::init_saved(
        model,
        &cfg.modules_to_save().map_err(AdapterError::Config)?,
        varmap,
    )?;
    Ok(wrapped)
}

/// `W + s·B·A` for every wrapped layer (PEFT's merge_and_unload), by HF weight key; DoRA layers also
/// rescale rows to their magnitudes; plus the `saved` (modules_to_save) modules' weights.
pub fn merged_weights(
    model: &mut dyn Linears,
    saved: &[String],
) -> std::result::Result<HashMap<String, Tensor>, AdapterError> {
    let mut out = crate::saved::saved_weights(model, saved)?;
    for (name, linear) in model.linears_mut() {
        let Some(adapter) = linear.adapter.take() else {
            continue;
        };
        let merged = adapter_delta_merge(linear, adapter.as_ref())?;
        linear.weight = merged.to_dtype(linear.weight.dtype())?;
        linear.quantized = None;
        out.insert(format!("{name}.weight"), linear.weight.clone());
    }
    Ok(out)
}

fn adapter_delta_merge(linear: &Linear, adapter: &dyn LinearAdapter) -> Result<Tensor> {
    // Probe the adapted layer with the identity: row j of f(I) − b is (W_merged)ᵀ row j.
    let n = linear.in_dim();
    let eye =
        Tensor::eye(n, DType::F32, linear.weight.device())?.to_dtype(linear.weight.dtype())?;
    let mut y = adapter.forward(&eye, linear, None)?;
    if let Some(b) = &linear.bias {
        y = y.broadcast_sub(b)?;
    }
    y.t()?.contiguous()
}

/// MTLoRA's task layers on `model` (none for other adapters).
fn mtlora_task_layers(cfg: &LoraConfig, model: &mut dyn Linears) -> Vec<usize> {
    match cfg.task_names().is_empty() {
        true => Vec::new(),
        false => cfg.task_layers(layer_count(model)),
    }
}

/// Layers of the model, from its linear layers' names (`….layers.<i>.…`).
fn layer_count(model: &mut dyn Linears) -> usize {
    model
        .linears_mut()
        .iter()
        .filter_map(|(name, _)| {
            name.split(".layers.")
                .nth(1)?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |m| m + 1)
}
