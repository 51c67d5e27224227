//! `linear` (model soups, Wortsman et al. 2022): Σ wᵢ·xᵢ, divided by Σ wᵢ when `normalize`
//! (default true). mergekit computes it in f32; graft accumulates in f64. `base_model` is not
//! used: every input, the base too, needs a `weight`.

use super::{shared, Base, Group, Spec};
use serde_json::Value;

pub const SPEC: Spec = Spec {
    name: "linear",
    base: Base::Ignored,
    min_inputs: 1,
    max_inputs: None,
    input_params: &[("weight", None)],
    non_base_only: false,
    shared_params: || shared(&[("normalize", Value::Bool(true))]),
    required_params: &[],
    merge,
};

fn merge(g: Group) -> Result<Vec<f32>, String> {
    let w = (0..g.tensors.len())
        .map(|i| g.num(i, "weight"))
        .collect::<Result<Vec<_>, _>>()?;
    let div = if g.flag("normalize")? {
        w.iter().sum::<f64>()
    } else {
        1.0
    };
    let n = g.tensors[0].len();
    Ok((0..n)
        .map(|j| {
            let s: f64 = g.tensors.iter().zip(&w).map(|(t, w)| w * t[j] as f64).sum();
            (s / div) as f32
        })
        .collect())
}
