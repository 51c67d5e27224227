//! Ladder Side-Tuning (Sung, Cho, Bansal 2022, "LST: Ladder Side-Tuning for Parameter and Memory
//! Efficient Transfer Learning", arXiv 2206.06522; the authors' `modeling_side_t5.py`), for
//! decoder-only models: a small side network — the backbone's blocks with hidden, MLP and head
//! sizes divided by the reduction factor r (8), the number of heads kept — reads every backbone
//! layer's output through a ladder and alone is trained. The backbone runs without a graph (its
//! weights are frozen plain tensors), so nothing is backpropagated through it:
//!
//!   s = W_first·embeds + b_first
//!   for each layer i:  h_i = Block_i(h_{i−1}) (frozen);  μ_i = σ(α_i / T)
//!                      s = SideBlock_i(μ_i·s + (1 − μ_i)·(W_i·h_i + b_i))
//!   hidden = W_up·SideNorm(s) + b_up  →  the backbone's frozen LM head
//!
//! with T = 0.1 and α_i = 0 at the start (μ = ½), as their `learnable` gate; down/up-samplers
//! ~ N(0, 0.01) with zero biases as theirs. Their side blocks start as Fisher-pruned copies of the
//! backbone's; here they start random (N(0, 0.02), norms 1) — the paper's no-pruning ablation.
//!
//! Shapes: ids (B, T); h_i (B, T, H); s (B, T, H/r); hidden (B, T, H).

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarMap;
use graft_models::{Decoder, DecoderConfig};
use rand::{rngs::StdRng, Rng, SeedableRng};

pub const TEMPERATURE: f64 = 0.1;

pub struct Ladder {
    pub backbone: Decoder,
    pub side: Decoder,
    first: (Tensor, Tensor),
    downs: Vec<(Tensor, Tensor)>,
    up: (Tensor, Tensor),
    gates: Tensor,
}

/// The side network's config: the backbone's with hidden, intermediate and head sizes / r, a
/// one-token vocabulary (its embeddings are unused) and no head.
pub fn side_config(
    backbone: &DecoderConfig,
    r: usize,
) -> std::result::Result<DecoderConfig, String> {
    let mut c = backbone.clone();
    let div = |x: usize, what: &str| match x % r == 0 && x / r > 0 {
        true => Ok(x / r),
        false => Err(format!(
            "reduction {r} does not divide the backbone's {what} ({x})"
        )),
    };
    c.hidden_size = div(backbone.hidden_size, "hidden size")?;
    c.intermediate_size = div(backbone.intermediate_size, "intermediate size")?;
    c.head_dim = div(backbone.head_dim, "head dim")?;
    if c.head_dim % 2 == 1 {
        return Err(format!(
            "reduction {r}: side head dim {} must be even for rotary embeddings",
            c.head_dim
        ));
    }
    c.vocab_size = 1;
    c.tie_word_embeddings = true;
    // Rotary tables for the side head size, with the backbone's base θ (its second inverse
    // frequency is θ^(−2/head_dim)).
    for layer in c.layers.iter_mut() {
        let f = &layer.rope.inv_freq;
        let theta = match f.get(1) {
            Some(&f1) if f1 > 0.0 => f1.powf(-(backbone.head_dim as f64) / 2.0),
            _ => 10_000.0,
        };
        layer.rope = graft_models::config::Rope::new(theta, c.head_dim, None)?;
    }
    Ok(c)
}

fn linear(x: &Tensor, (w, b): &(Tensor, Tensor)) -> Result<Tensor> {
    graft_models::layers::linear::matmul_t(x, w)?.broadcast_add(b)
}

impl Ladder {
    /// A fresh side network for `backbone` with its variables in `varmap` (keys `side.…` and
    /// `lst.…`), seeded.
    pub fn new(
        backbone: Decoder,
        r: usize,
        varmap: &VarMap,
        seed: u64,
    ) -> std::result::Result<Self, String> {
        let cfg = side_config(&backbone.cfg, r)?;
        let device = Device::Cpu;
        let vb = candle_nn::VarBuilder::from_varmap(varmap, DType::F32, &device);
        let side = Decoder::new(&cfg, vb.pp("side")).map_err(|e| e.to_string())?;
        let (h, hs, layers) = (
            backbone.cfg.hidden_size,
            cfg.hidden_size,
            backbone.layers.len(),
        );
        let mut rng = StdRng::seed_from_u64(seed);
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| "varmap poisoned".to_string())?;
        let normal = |shape: (usize, usize), std: f64, rng: &mut StdRng| -> Result<Var> {
            // Box–Muller
            let v: Vec<f32> = (0..shape.0 * shape.1)
                .map(|_| {
                    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
                    (std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
                })
                .collect();
            Var::from_tensor(&Tensor::from_vec(v, shape, &device)?)
        };
        // The side blocks: N(0, 0.02) weights, norms 1 (as Decoder::new made them, then set).
        for (name, var) in data.iter() {
            if name.starts_with("side.") && var.rank() == 2 {
                let (a, b) = var.dims2().map_err(|e| e.to_string())?;
                var.set(
                    normal((a, b), 0.02, &mut rng)
                        .map_err(|e| e.to_string())?
                        .as_tensor(),
                )
                .map_err(|e| e.to_string())?;
            } else if name.starts_with("side.") {
                var.set(&var.ones_like().map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
        }
        let mut sampler = |name: String,
                           out: usize,
                           inp: usize,
                           data: &mut std::collections::HashMap<String, Var>|
         -> Result<(Tensor, Tensor)> {
            let w = normal((out, inp), 0.01, &mut rng)?;
            let b = Var::from_tensor(&Tensor::zeros(out, DType::F32, &device)?)?;
            let pair = (w.as_tensor().clone(), b.as_tensor().clone());
            data.insert(format!("{name}.weight"), w);
            data.insert(format!("{name}.bias"), b);
            Ok(pair)
        };
        let e = |e: candle_core::Error| e.to_string();
        let first = sampler("lst.first_down".into(), hs, h, &mut data).map_err(e)?;
        let downs = (0..layers)
            .map(|i| sampler(format!("lst.down.{i}"), hs, h, &mut data))
            .collect::<Result<Vec<_>>>()
            .map_err(e)?;
        let up = sampler("lst.up".into(), h, hs, &mut data).map_err(e)?;
        let gates =
            Var::from_tensor(&Tensor::zeros(layers, DType::F32, &device).map_err(e)?).map_err(e)?;
        data.insert("lst.gates".into(), gates.clone());
        Ok(Self {
            backbone,
            side,
            first,
            downs,
            up,
            gates: gates.as_tensor().clone(),
        })
    }

    /// The hidden states (B, T, H) the backbone's head reads: the up-projected side output.
    pub fn hidden_states(
        &self,
        ids: &Tensor,
        packed: Option<(&Tensor, &Tensor)>,
        train: bool,
    ) -> Result<Tensor> {
        let positions = match packed {
            Some((p, _)) => p.clone(),
            None => Decoder::positions(ids)?,
        };
        let segments = packed.map(|(_, s)| s);
        // The frozen backbone: every layer's output, detached.
        let embeds = self.backbone.embed(ids)?.detach();
        let mut outs = Vec::with_capacity(self.downs.len());
        self.backbone.run_layers(
            embeds.clone(),
            &positions,
            segments,
            None,
            false,
            &mut |_, x| {
                outs.push(x.detach());
                Ok(x)
            },
        )?;
        let mu = candle_nn::ops::sigmoid(&(&self.gates / TEMPERATURE)?)?;
        let mix = |i: usize, s: Tensor| -> Result<Tensor> {
            let m = mu.get(i)?;
            let ladder = linear(&outs[i], &self.downs[i])?;
            s.broadcast_mul(&m)? + ladder.broadcast_mul(&(1.0 - &m)?)?
        };
        let s0 = mix(0, linear(&embeds, &self.first)?)?;
        let last = self.downs.len() - 1;
        let s =
            self.side.run_layers(
                s0,
                &positions,
                segments,
                None,
                train,
                &mut |i, s| match i < last {
                    true => mix(i + 1, s),
                    false => Ok(s),
                },
            )?;
        linear(&s, &self.up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_config_divides_or_says_why() {
        let cfg = graft_models::registry::decoder_config(
            std::path::Path::new("c"),
            &serde_json::json!({"model_type": "llama", "vocab_size": 32, "hidden_size": 64, "intermediate_size": 128,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}),
        )
        .unwrap();
        let s = side_config(&cfg, 8).unwrap();
        assert_eq!(
            (
                s.hidden_size,
                s.intermediate_size,
                s.head_dim,
                s.num_attention_heads
            ),
            (8, 16, 2, 4)
        );
        assert!(side_config(&cfg, 3).unwrap_err().contains("hidden size"));
    }
}
