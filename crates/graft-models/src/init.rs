//! Fresh weights for a new model, as transformers' `_init_weights` draws them: linear and embedding
//! weights ~ N(0, initializer_range²), biases 0, RMSNorm weights 1 (0 for Gemma's `(1 + w)` norms).
//! Seeded with graft's own RNG so a run is reproducible (candle's CPU RNG cannot be seeded).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::config::{DecoderConfig, NormKind};
use crate::decoder::Decoder;
use crate::Result;

/// Standard normal draws by the Box–Muller transform.
fn normals(rng: &mut StdRng, n: usize, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let theta = 2.0 * std::f64::consts::PI * u2;
        out.push((r * theta.cos()) as f32);
        out.push((r * theta.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// Fresh weights, by HF key, for the model a `config.json` (read from `path`) describes:
/// decoders drawn with its `initializer_range` (default 0.02, as transformers), T5 as
/// transformers' `_init_weights` for T5.
pub fn init_model_weights(
    path: &std::path::Path,
    config_json: &serde_json::Value,
    seed: u64,
) -> crate::Result<HashMap<String, Tensor>> {
    match crate::registry::arch_config(path, config_json)? {
        crate::registry::Arch::T5(cfg) => init_t5_weights(&cfg, seed),
        crate::registry::Arch::Decoder(cfg) => {
            let range = config_json
                .get("initializer_range")
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.02);
            init_weights(&cfg, range, seed)
        }
    }
}

/// Every weight the model needs, by HF key, freshly initialised.
pub fn init_weights(
    cfg: &DecoderConfig,
    initializer_range: f64,
    seed: u64,
) -> Result<HashMap<String, Tensor>> {
    let varmap = VarMap::new();
    Decoder::new(
        cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    let vars = varmap.all_vars();
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("varmap poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = HashMap::with_capacity(vars.len());
    for name in names {
        let shape = data[name].shape().clone();
        let n = shape.elem_count();
        let values = if name.ends_with("norm.weight") {
            vec![
                if cfg.norm == NormKind::OnePlus {
                    0.0
                } else {
                    1.0
                };
                n
            ]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            normals(&mut rng, n, initializer_range)
        };
        out.insert(name.clone(), Tensor::from_vec(values, shape, &Device::Cpu)?);
    }
    Ok(out)
}

/// Fresh T5 weights as transformers' `T5PreTrainedModel._init_weights` draws them (factor 1):
/// embeddings and an untied head ~ N(0, 1); q ~ N(0, (d_model·d_kv)^-½); k, v, wi ~ N(0, d_model^-½);
/// o ~ N(0, (heads·d_kv)^-½); wo ~ N(0, d_ff^-½); relative biases ~ N(0, d_model^-½); norms 1.
pub fn init_t5_weights(cfg: &crate::t5::T5Config, seed: u64) -> Result<HashMap<String, Tensor>> {
    let varmap = VarMap::new();
    let untied = cfg.tie_word_embeddings == Some(false);
    crate::t5::T5::new_with_head(
        cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        untied,
    )?;
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("varmap poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let (d, kv, h, ff) = (
        cfg.d_model as f64,
        cfg.d_kv as f64,
        cfg.num_heads as f64,
        cfg.d_ff as f64,
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = HashMap::new();
    for name in names {
        let shape = data[name].shape().clone();
        let n = shape.elem_count();
        let std = if name.ends_with("layer_norm.weight") {
            None
        } else if name == "shared.weight" || name == "lm_head.weight" {
            Some(1.0)
        } else if name.ends_with(".q.weight") {
            Some((d * kv).powf(-0.5))
        } else if name.ends_with(".o.weight") {
            Some((h * kv).powf(-0.5))
        } else if name.ends_with(".wo.weight") {
            Some(ff.powf(-0.5))
        } else {
            // k, v, wi, wi_0, wi_1, relative_attention_bias
            Some(d.powf(-0.5))
        };
        let values = match std {
            None => vec![1.0; n],
            Some(std) => normals(&mut rng, n, std),
        };
        out.insert(name.clone(), Tensor::from_vec(values, shape, &Device::Cpu)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_draws_have_the_right_moments() {
        let v = normals(&mut StdRng::seed_from_u64(1), 100_000, 0.02);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(
            mean.abs() < 5e-4 && (var.sqrt() - 0.02).abs() < 5e-4,
            "mean {mean} std {}",
            var.sqrt()
        );
    }
}
