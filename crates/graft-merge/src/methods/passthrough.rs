//! `passthrough`: the single input's tensor, times its `scale` when one is set (mergekit 0.1.5
//! `merge_methods/passthrough.py`) — with `slices`, the frankenmerge of layer ranges.

use super::{shared, Base, Group, Spec};

pub const SPEC: Spec = Spec {
    name: "passthrough",
    base: Base::Ignored,
    min_inputs: 1,
    max_inputs: Some(1),
    input_params: &[("scale", Some(f64::NAN))],
    non_base_only: false,
    shared_params: || shared(&[]),
    required_params: &[],
    merge,
};

fn merge(mut g: Group) -> Result<Vec<f32>, String> {
    // NaN marks "no scale given".
    let scale = g.num(0, "scale").unwrap_or(f64::NAN);
    Ok(match scale.is_nan() {
        true => std::mem::take(&mut g.tensors[0]),
        false => g.tensors[0]
            .iter()
            .map(|&x| (x as f64 * scale) as f32)
            .collect(),
    })
}
