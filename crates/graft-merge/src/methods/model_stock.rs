//! `model_stock` (Jang et al. 2024, "Model Stock"): with offsets oᵢ = wᵢ − w₀ from the base,
//! cos = the mean pairwise cosine of the offsets (norm products clamped at 1e-6),
//! t = N·cos / (1 + (N − 1)·cos) (0 when the denominator is below 1e-6), and the output
//! t·mean(wᵢ) + (1 − t)·w₀ — over the whole tensor (mergekit 0.1.5 `model_stock.py`,
//! `filter_wise: false`).

use super::{shared, Base, Group, Spec};
use serde_json::Value;

pub const SPEC: Spec = Spec {
    name: "model_stock",
    base: Base::Required,
    min_inputs: 3,
    max_inputs: None,
    input_params: &[],
    non_base_only: true,
    shared_params: || shared(&[("filter_wise", Value::Bool(false))]),
    required_params: &[],
    merge,
};

fn merge(g: Group) -> Result<Vec<f32>, String> {
    if g.flag("filter_wise")? {
        return Err("model_stock: filter_wise = true is not supported".into());
    }
    let b = g.base.ok_or("model_stock needs a base model")?;
    let w0 = &g.tensors[b];
    let others: Vec<&Vec<f32>> = g
        .tensors
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != b)
        .map(|(_, t)| t)
        .collect();
    let n = others.len();
    let off = |i: usize, j: usize| others[i][j] as f64 - w0[j] as f64;
    let norms: Vec<f64> = (0..n)
        .map(|i| (0..w0.len()).map(|j| off(i, j).powi(2)).sum::<f64>().sqrt())
        .collect();
    let mut cos_sum = 0.0;
    let mut pairs = 0;
    for a in 0..n {
        for c in a + 1..n {
            let dot: f64 = (0..w0.len()).map(|j| off(a, j) * off(c, j)).sum();
            cos_sum += (dot / (norms[a] * norms[c]).max(1e-6)).clamp(-1.0, 1.0);
            pairs += 1;
        }
    }
    let cos = cos_sum / pairs as f64;
    let den = 1.0 + (n as f64 - 1.0) * cos;
    let t = if den.abs() < 1e-6 {
        0.0
    } else {
        n as f64 * cos / den
    };
    Ok((0..w0.len())
        .map(|j| {
            let mean = others.iter().map(|o| o[j] as f64).sum::<f64>() / n as f64;
            (t * mean + (1.0 - t) * w0[j] as f64) as f32
        })
        .collect())
}
