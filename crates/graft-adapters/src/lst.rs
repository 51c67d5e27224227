//! Ladder Side-Tuning (Sung, Cho, Bansal 2022, "LST: Ladder Side-Tuning for Parameter and Memory
//! Efficient Transfer Learning", arXiv 2206.06522; the authors' `modeling_side_t5.py`), for
//! decoder-only models: a small side network — the backbone's blocks with hidden, MLP and head
//! sizes divided by the reduction factor r (8), the number of heads kept — reads backbone layer
//! outputs through a ladder and alone is trained. The backbone runs without a graph (its weights
//! are frozen plain tensors), so nothing is backpropagated through it:
//!
//!   s = W_first·embeds + b_first
//!   for each tapped layer i (all, or `side_layers`), j its side index:
//!       h_i = Block_i(…) (frozen);  μ_j = σ(α_j / T)
//!       s = SideBlock_j(μ_j·s + (1 − μ_j)·(W_j·h_i + b_j))
//!   hidden = W_up·SideNorm(s) + b_up  →  the backbone's frozen LM head
//!
//! with T = 0.1 and α_j = 0 at the start (μ = ½), as their `learnable` gate; down/up-samplers
//! ~ N(0, 0.01) with zero biases as theirs. Side blocks start as structurally pruned copies of the
//! tapped backbone blocks (lst_prune.rs) or random (N(0, 0.02), norms 1: their no-pruning
//! ablation). `side_layers` drops side blocks as their layer-dropping runs do.
//!
//! The side network's rotary pairs are a subset of the backbone's (`rope_pairs`, per side layer):
//! a pruned head keeps the backbone's frequencies for the dimensions it keeps.
//!
//! Shapes: ids (B, T); h_i (B, T, H); s (B, T, H/r); hidden (B, T, H).

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarMap;
use graft_models::{Decoder, DecoderConfig, KvCache, SideNetwork};
use rand::{rngs::StdRng, Rng, SeedableRng};

pub const TEMPERATURE: f64 = 0.1;

/// What fixes the side network's shape: reduction, tapped layers, kept rotary pairs per side layer.
#[derive(Debug, Clone, PartialEq)]
pub struct SideSpec {
    pub reduction: usize,
    pub taps: Vec<usize>,
    pub rope_pairs: Vec<Vec<usize>>,
}

impl SideSpec {
    /// Every layer tapped (or `side_layers`), rotary pairs evenly spaced (0, r, 2r, …): with
    /// default rotary scaling these are exactly θ^(−2i/d_side), a fresh side head's frequencies.
    pub fn even(
        backbone: &DecoderConfig,
        reduction: usize,
        side_layers: Option<&[usize]>,
    ) -> std::result::Result<Self, String> {
        let n = backbone.num_hidden_layers();
        let taps: Vec<usize> = side_layers.map_or_else(|| (0..n).collect(), <[usize]>::to_vec);
        if taps.is_empty() || taps.windows(2).any(|w| w[0] >= w[1]) || taps[taps.len() - 1] >= n {
            return Err(format!(
                "side_layers: must be increasing layer indices below {n}, got {taps:?}"
            ));
        }
        let side_pairs = side_head_dim(backbone, reduction)? / 2;
        let rope_pairs = taps
            .iter()
            .map(|_| (0..side_pairs).map(|p| p * reduction).collect())
            .collect();
        Ok(Self {
            reduction,
            taps,
            rope_pairs,
        })
    }
}

fn side_head_dim(backbone: &DecoderConfig, r: usize) -> std::result::Result<usize, String> {
    let d = backbone.head_dim;
    if d % r != 0 || d / r == 0 || (d / r) % 2 == 1 {
        return Err(format!(
            "reduction {r}: the side head size (head dim {d} / {r}) must be a whole, even number"
        ));
    }
    Ok(d / r)
}

/// The side network's config: the backbone's tapped layers with hidden, intermediate and head
/// sizes / r, the spec's rotary frequencies, a one-token vocabulary (its embeddings are unused)
/// and no head.
pub fn side_config(
    backbone: &DecoderConfig,
    spec: &SideSpec,
) -> std::result::Result<DecoderConfig, String> {
    let r = spec.reduction;
    let mut c = backbone.clone();
    let div = |x: usize, what: &str| match x % r == 0 && x / r > 0 {
        true => Ok(x / r),
        false => Err(format!(
            "reduction {r} does not divide the backbone's {what} ({x})"
        )),
    };
    c.hidden_size = div(backbone.hidden_size, "hidden size")?;
    c.intermediate_size = div(backbone.intermediate_size, "intermediate size")?;
    c.head_dim = side_head_dim(backbone, r)?;
    c.vocab_size = 1;
    c.tie_word_embeddings = true;
    if spec.rope_pairs.len() != spec.taps.len() {
        return Err("rope_pairs: one list per side layer".into());
    }
    c.layers = Vec::with_capacity(spec.taps.len());
    for (&i, pairs) in spec.taps.iter().zip(&spec.rope_pairs) {
        let Some(layer) = backbone.layers.get(i) else {
            return Err(format!("side_layers: the backbone has no layer {i}"));
        };
        let mut layer = layer.clone();
        let f = &layer.rope.inv_freq;
        if pairs.len() != c.head_dim / 2 || pairs.iter().any(|&p| p >= f.len()) {
            return Err(format!("rope_pairs of layer {i}: {pairs:?} do not fit"));
        }
        layer.rope.inv_freq = pairs.iter().map(|&p| f[p]).collect();
        c.layers.push(layer);
    }
    Ok(c)
}

#[derive(Debug)]
pub struct Ladder {
    pub side: Decoder,
    pub spec: SideSpec,
    first: (Tensor, Tensor),
    downs: Vec<(Tensor, Tensor)>,
    up: (Tensor, Tensor),
    gates: Tensor,
}

fn linear(x: &Tensor, (w, b): &(Tensor, Tensor)) -> Result<Tensor> {
    graft_models::layers::linear::matmul_t(x, w)?.broadcast_add(b)
}

fn normal(shape: (usize, usize), std: f64, rng: &mut StdRng) -> Result<Tensor> {
    // Box–Muller
    let v: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| {
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
            (std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

impl Ladder {
    /// A side network for `backbone` with its variables in `varmap` (keys `side.…` and `lst.…`),
    /// seeded. `side_weights` (keys `side.…`, from lst_prune.rs) replace the random side blocks.
    pub fn new(
        backbone: &DecoderConfig,
        spec: SideSpec,
        varmap: &VarMap,
        seed: u64,
        side_weights: Option<&HashMap<String, Tensor>>,
    ) -> std::result::Result<Self, String> {
        let e = |e: candle_core::Error| e.to_string();
        let cfg = side_config(backbone, &spec)?;
        let device = Device::Cpu;
        let vb = candle_nn::VarBuilder::from_varmap(varmap, DType::F32, &device);
        let side = Decoder::new(&cfg, vb.pp("side")).map_err(e)?;
        let (h, hs, taps) = (backbone.hidden_size, cfg.hidden_size, spec.taps.len());
        let mut rng = StdRng::seed_from_u64(seed);
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| "varmap poisoned".to_string())?;
        let mut names: Vec<String> = data
            .keys()
            .filter(|n| n.starts_with("side."))
            .cloned()
            .collect();
        names.sort();
        for name in names {
            let var = &data[&name];
            let value = match side_weights {
                Some(w) if !name.ends_with("embed_tokens.weight") => {
                    let t = w
                        .get(&name)
                        .ok_or_else(|| format!("pruned side weights lack `{name}`"))?;
                    if t.dims() != var.dims() {
                        return Err(format!(
                            "pruned `{name}`: shape {:?}, the side network needs {:?}",
                            t.dims(),
                            var.dims()
                        ));
                    }
                    t.to_dtype(DType::F32).map_err(e)?
                }
                _ if var.rank() == 2 => {
                    normal(var.dims2().map_err(e)?, 0.02, &mut rng).map_err(e)?
                }
                _ => var.ones_like().map_err(e)?,
            };
            var.set(&value).map_err(e)?;
        }
        let mut sampler = |name: String, out: usize, inp: usize| -> Result<(Tensor, Tensor)> {
            let w = Var::from_tensor(&normal((out, inp), 0.01, &mut rng)?)?;
            let b = Var::from_tensor(&Tensor::zeros(out, DType::F32, &device)?)?;
            let pair = (w.as_tensor().clone(), b.as_tensor().clone());
            data.insert(format!("{name}.weight"), w);
            data.insert(format!("{name}.bias"), b);
            Ok(pair)
        };
        let first = sampler("lst.first_down".into(), hs, h).map_err(e)?;
        let downs = (0..taps)
            .map(|j| sampler(format!("lst.down.{j}"), hs, h))
            .collect::<Result<Vec<_>>>()
            .map_err(e)?;
        let up = sampler("lst.up".into(), h, hs).map_err(e)?;
        let gates =
            Var::from_tensor(&Tensor::zeros(taps, DType::F32, &device).map_err(e)?).map_err(e)?;
        data.insert("lst.gates".into(), gates.clone());
        drop(data);
        Ok(Self {
            side,
            spec,
            first,
            downs,
            up,
            gates: gates.as_tensor().clone(),
        })
    }

    /// A trained side network from its saved tensors (`side.…`, `lst.…`), for inference.
    pub fn load(
        backbone: &DecoderConfig,
        spec: SideSpec,
        tensors: &HashMap<String, Tensor>,
    ) -> std::result::Result<Self, String> {
        let cfg = side_config(backbone, &spec)?;
        let get = |k: &str| {
            tensors
                .get(k)
                .cloned()
                .ok_or_else(|| format!("adapter tensor `{k}` is missing"))
        };
        let pair =
            |k: &str| Ok::<_, String>((get(&format!("{k}.weight"))?, get(&format!("{k}.bias"))?));
        let mut side_tensors: HashMap<String, Tensor> = tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("side.").map(|s| (s.to_string(), v.clone())))
            .collect();
        let unused = Tensor::zeros((1, cfg.hidden_size), DType::F32, &Device::Cpu)
            .map_err(|e| e.to_string())?;
        side_tensors.insert("model.embed_tokens.weight".into(), unused);
        let vb = candle_nn::VarBuilder::from_tensors(side_tensors, DType::F32, &Device::Cpu);
        let side = Decoder::new(&cfg, vb).map_err(|e| format!("side network: {e}"))?;
        let downs = (0..spec.taps.len())
            .map(|j| pair(&format!("lst.down.{j}")))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Self {
            side,
            first: pair("lst.first_down")?,
            downs,
            up: pair("lst.up")?,
            gates: get("lst.gates")?,
            spec,
        })
    }
}

impl SideNetwork for Ladder {
    fn cache_layers(&self) -> usize {
        self.spec.taps.len()
    }

    fn set_dropout_seed(&self, seed: u64) {
        self.side.set_dropout_seed(seed);
    }

    /// The hidden states (B, T, H) the backbone's head reads: the up-projected side output.
    fn hidden(
        &self,
        backbone: &Decoder,
        embeds: Tensor,
        positions: &Tensor,
        segments: Option<&Tensor>,
        cache: Option<&mut KvCache>,
        train: bool,
    ) -> Result<Tensor> {
        // The frozen backbone: the tapped layers' outputs, detached.
        let embeds = embeds.detach();
        let mut outs = HashMap::with_capacity(self.downs.len());
        let mut tap = |i: usize, x: Tensor| {
            if self.spec.taps.contains(&i) {
                outs.insert(i, x.detach());
            }
            Ok(x)
        };
        let mut side_cache = match cache {
            Some(c) => {
                backbone.run_layers(
                    embeds.clone(),
                    positions,
                    segments.into(),
                    Some(&mut *c),
                    false,
                    &mut tap,
                )?;
                Some((c.split_off(backbone.layers.len()), c))
            }
            None => {
                let masking = segments.into();
                backbone.run_layers(embeds.clone(), positions, masking, None, false, &mut tap)?;
                None
            }
        };
        let mu = candle_nn::ops::sigmoid(&(&self.gates / TEMPERATURE)?)?;
        let mix = |j: usize, s: Tensor| -> Result<Tensor> {
            let m = mu.get(j)?;
            let ladder = linear(&outs[&self.spec.taps[j]], &self.downs[j])?;
            s.broadcast_mul(&m)? + ladder.broadcast_mul(&(1.0 - &m)?)?
        };
        let s0 = mix(0, linear(&embeds, &self.first)?)?;
        let last = self.downs.len() - 1;
        let s = self.side.run_layers(
            s0,
            positions,
            segments.into(),
            side_cache.as_mut().map(|(sc, _)| sc),
            train,
            &mut |j, s| match j < last {
                true => mix(j + 1, s),
                false => Ok(s),
            },
        )?;
        if let Some((sc, c)) = side_cache {
            c.rejoin(sc);
        }
        linear(&s, &self.up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DecoderConfig {
        graft_models::registry::decoder_config(
            std::path::Path::new("c"),
            &serde_json::json!({"model_type": "llama", "vocab_size": 32, "hidden_size": 64, "intermediate_size": 128,
                "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2}),
        )
        .unwrap()
    }

    #[test]
    fn side_config_divides_or_says_why() {
        let cfg = cfg();
        let s = side_config(&cfg, &SideSpec::even(&cfg, 4, None).unwrap()).unwrap();
        assert_eq!(
            (
                s.hidden_size,
                s.intermediate_size,
                s.head_dim,
                s.num_attention_heads
            ),
            (16, 32, 4, 4)
        );
        assert!(SideSpec::even(&cfg, 16, None).unwrap_err().contains("even"));
        assert!(SideSpec::even(&cfg, 3, None).unwrap_err().contains("head"));
        assert!(SideSpec::even(&cfg, 4, Some(&[2, 1]))
            .unwrap_err()
            .contains("increasing"));
        assert!(SideSpec::even(&cfg, 4, Some(&[1, 4])).is_err());
    }

    #[test]
    fn evenly_spaced_pairs_are_a_fresh_side_heads_frequencies() {
        // θ^(−2(p·r)/d) = θ^(−2p/(d/r)): the backbone's pairs 0, r, 2r… are the side head's own.
        let cfg = cfg();
        let spec = SideSpec::even(&cfg, 4, Some(&[1, 3])).unwrap();
        let s = side_config(&cfg, &spec).unwrap();
        let fresh = graft_models::config::Rope::new(10_000.0, 4, None).unwrap();
        assert_eq!(s.layers.len(), 2);
        for (a, b) in s.layers[0].rope.inv_freq.iter().zip(&fresh.inv_freq) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }
}
