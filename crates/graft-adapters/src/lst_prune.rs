//! LST's side-network initialisation: structurally pruned copies of the backbone's blocks (Sung
//! et al. 2022, §2.3; the authors' `pruning_without_residual` in `pruning/pruning_methods.py`).
//! Each kept row or column is chosen by an importance — the weights' magnitude |W| (their
//! `t5-base-v2`), or the empirical Fisher Σ_n (∂L_n/∂W)² over training rows (their `fisher-v2`,
//! the default of their scripts; computed by graft-train) — summed into a score per unit, keeping
//! the 1/r highest-scoring units in their original order, as their `L1Strategy`.
//!
//! Adapted to Llama-family blocks (pre-norm, rotary, grouped KV heads, gated MLP):
//! - hidden units: by the embeddings' column scores Σ_v I_emb[v, c], one selection for the whole
//!   residual stream. (Theirs re-selects after every sublayer, which for a side block with
//!   residual adds would add mismatched units; the first selection is theirs.)
//! - query/key: rotary pairs (p, p + d/2), the same for every head of a layer, by
//!   Σ_heads Σ_c I_q[h, p, c]·I_k[g(h), p, c] over both halves — their q⊙k product, per KV
//!   group; the side layer keeps those pairs' frequencies (lst.rs `rope_pairs`).
//! - value/output: head dims e by Σ_h (Σ_c I_v[g(h), e, c])·(Σ_o I_o[o, h, e]).
//! - MLP units u: by Σ_c I_gate[u, c]·I_up[u, c] (their product over the list's tensors).
//! - norms keep the selected units; the side's ladder samplers stay random, as theirs.
//!
//! Shapes: q (n_h·d, H), k/v (n_kv·d, H), o (H, n_h·d), gate/up (I, H), down (H, I).

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use graft_models::DecoderConfig;

use crate::lst::SideSpec;

type Res<T> = std::result::Result<T, String>;

/// A tensor's values as a row-major matrix (rows, cols); vectors are one row.
struct Mat {
    rows: usize,
    cols: usize,
    v: Vec<f32>,
}

impl Mat {
    fn of(t: &Tensor, name: &str) -> Res<Self> {
        let e = |e: candle_core::Error| format!("`{name}`: {e}");
        let (rows, cols) = match t.dims() {
            [n] => (1, *n),
            [r, c] => (*r, *c),
            d => return Err(format!("`{name}`: expected a matrix, got shape {d:?}")),
        };
        let v = t
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(e)?;
        Ok(Self { rows, cols, v })
    }
    fn at(&self, r: usize, c: usize) -> f32 {
        self.v[r * self.cols + c]
    }
}

/// The `keep` highest scores' indices, in ascending order (ties: the lower index).
fn top(scores: &[f64], keep: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(keep);
    idx.sort_unstable();
    idx
}

fn select(t: &Tensor, dim: usize, idx: &[usize]) -> Res<Tensor> {
    let ids =
        Tensor::from_iter(idx.iter().map(|&i| i as u32), t.device()).map_err(|e| e.to_string())?;
    t.index_select(&ids, dim).map_err(|e| e.to_string())
}

/// Per head `h` of `heads`: the rows h·d + e for e in `dims`.
fn head_rows(heads: usize, d: usize, dims: &[usize]) -> Vec<usize> {
    (0..heads)
        .flat_map(|h| dims.iter().map(move |&e| h * d + e))
        .collect()
}

/// The side network's pruned weights (keys `side.model.…`) and its spec (the kept rotary pairs).
/// `importance` maps backbone keys to |W|-like scores; keys it lacks use |W|.
pub fn pruned_side(
    cfg: &DecoderConfig,
    reduction: usize,
    taps: &[usize],
    weights: &HashMap<String, Tensor>,
    importance: &HashMap<String, Tensor>,
) -> Res<(SideSpec, HashMap<String, Tensor>)> {
    let r = reduction;
    let mut spec = SideSpec::even(cfg, r, Some(taps))?;
    let w = |k: &str| {
        weights
            .get(k)
            .ok_or_else(|| format!("LST pruned init: the backbone has no `{k}`"))
    };
    let imp = |k: &str| -> Res<Mat> {
        match importance.get(k) {
            Some(t) => Mat::of(t, k),
            None => Mat::of(&w(k)?.abs().map_err(|e| e.to_string())?, k),
        }
    };
    let (h, d, nh, nkv) = (
        cfg.hidden_size,
        cfg.head_dim,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
    );
    let group = nh / nkv.max(1);

    // Hidden units, from the embeddings' columns.
    let emb = imp("model.embed_tokens.weight")?;
    let mut col = vec![0f64; h];
    for v in 0..emb.rows {
        for (c, s) in col.iter_mut().enumerate() {
            *s += emb.at(v, c) as f64;
        }
    }
    let hid = top(&col, h / r);

    let mut out = HashMap::new();
    let norm = |k: &str, out: &mut HashMap<String, Tensor>, side: &str| -> Res<()> {
        out.insert(side.to_string(), select(w(k)?, 0, &hid)?);
        Ok(())
    };
    norm("model.norm.weight", &mut out, "side.model.norm.weight")?;
    for (j, &i) in taps.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let s = format!("side.model.layers.{j}");
        let (q, k) = (
            imp(&format!("{p}.self_attn.q_proj.weight"))?,
            imp(&format!("{p}.self_attn.k_proj.weight"))?,
        );
        // Rotary pairs.
        let mut dim = vec![0f64; d];
        for hq in 0..nh {
            let g = hq / group;
            for (e, s) in dim.iter_mut().enumerate() {
                *s += hid
                    .iter()
                    .map(|&c| q.at(hq * d + e, c) as f64 * k.at(g * d + e, c) as f64)
                    .sum::<f64>();
            }
        }
        let half = d / 2;
        let pair: Vec<f64> = (0..half).map(|e| dim[e] + dim[e + half]).collect();
        let pairs = top(&pair, d / r / 2);
        let qk_dims: Vec<usize> = pairs
            .iter()
            .chain(pairs.iter())
            .enumerate()
            .map(|(n, &e)| if n < pairs.len() { e } else { e + half })
            .collect();
        // Value/output head dims.
        let (v, o) = (
            imp(&format!("{p}.self_attn.v_proj.weight"))?,
            imp(&format!("{p}.self_attn.o_proj.weight"))?,
        );
        let vo: Vec<f64> = (0..d)
            .map(|e| {
                (0..nh)
                    .map(|hq| {
                        let vs: f64 = hid
                            .iter()
                            .map(|&c| v.at((hq / group) * d + e, c) as f64)
                            .sum();
                        let os: f64 = hid.iter().map(|&c| o.at(c, hq * d + e) as f64).sum();
                        vs * os
                    })
                    .sum()
            })
            .collect();
        let v_dims = top(&vo, d / r);
        // MLP units.
        let (gt, up) = (
            imp(&format!("{p}.mlp.gate_proj.weight"))?,
            imp(&format!("{p}.mlp.up_proj.weight"))?,
        );
        let unit: Vec<f64> = (0..gt.rows)
            .map(|u| {
                hid.iter()
                    .map(|&c| gt.at(u, c) as f64 * up.at(u, c) as f64)
                    .sum()
            })
            .collect();
        let units = top(&unit, cfg.intermediate_size / r);

        let (q_rows, k_rows) = (head_rows(nh, d, &qk_dims), head_rows(nkv, d, &qk_dims));
        let (v_rows, o_cols) = (head_rows(nkv, d, &v_dims), head_rows(nh, d, &v_dims));
        let rows_cols: [(&str, &[usize], Option<&[usize]>); 7] = [
            ("self_attn.q_proj", &q_rows, Some(&hid)),
            ("self_attn.k_proj", &k_rows, Some(&hid)),
            ("self_attn.v_proj", &v_rows, Some(&hid)),
            ("self_attn.o_proj", &hid, Some(&o_cols)),
            ("mlp.gate_proj", &units, Some(&hid)),
            ("mlp.up_proj", &units, Some(&hid)),
            ("mlp.down_proj", &hid, Some(&units)),
        ];
        for (m, rows, cols) in rows_cols {
            let wt = select(w(&format!("{p}.{m}.weight"))?, 0, rows)?;
            let wt = match cols {
                Some(c) => select(&wt, 1, c)?,
                None => wt,
            };
            out.insert(format!("{s}.{m}.weight"), wt);
            if let Some(b) = weights.get(&format!("{p}.{m}.bias")) {
                out.insert(format!("{s}.{m}.bias"), select(b, 0, rows)?);
            }
        }
        // Norms: hidden-sized ones keep the hidden units; per-head q/k norms the kept dims.
        for (name, t) in weights {
            let Some(rest) = name.strip_prefix(&format!("{p}.")) else {
                continue;
            };
            if !rest.ends_with("norm.weight") {
                continue;
            }
            let n = t.dims1().map_err(|e| format!("`{name}`: {e}"))?;
            let idx: &[usize] = match (rest, n) {
                (_, n) if n == h && !rest.starts_with("self_attn.") => &hid,
                ("self_attn.q_norm.weight" | "self_attn.k_norm.weight", n) if n == d => &qk_dims,
                ("self_attn.q_norm.weight", n) if n == nh * d => &q_rows,
                ("self_attn.k_norm.weight", n) if n == nkv * d => &k_rows,
                _ => return Err(format!("LST pruned init: no rule for `{name}` ({n})")),
            };
            out.insert(format!("{s}.{rest}"), select(t, 0, idx)?);
        }
        spec.rope_pairs[j] = pairs;
    }
    Ok((spec, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_keeps_the_highest_in_order() {
        assert_eq!(top(&[0.5, 3.0, 1.0, 3.0, 0.0], 3), vec![1, 2, 3]);
        assert_eq!(top(&[1.0, 1.0, 1.0], 2), vec![0, 1]);
    }

    #[test]
    fn head_rows_repeat_the_dims_per_head() {
        assert_eq!(head_rows(2, 8, &[1, 5]), vec![1, 5, 9, 13]);
    }
}
