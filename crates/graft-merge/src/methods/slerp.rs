//! `slerp`: spherical interpolation between the base (v0) and the other model (v1) at `t`, over
//! the whole flattened tensor (mergekit 0.1.5 `merge_methods/slerp.py`): the angle comes from
//! the normalised vectors, the weights sin((1−t)θ)/sinθ and sin(tθ)/sinθ apply to the raw
//! tensors; when |cos θ| > 0.9995 (colinear or opposite) it falls back to (1−t)·v0 + t·v1.
//! Norms at or below 1e-8 count as 1. `t` is not range-checked (mergekit extrapolates); graft
//! refuses t outside [0, 1].

use super::{shared, Base, Group, Spec};

pub const SPEC: Spec = Spec {
    name: "slerp",
    base: Base::Required,
    min_inputs: 2,
    max_inputs: Some(2),
    input_params: &[],
    non_base_only: true,
    shared_params: || shared(&[]),
    required_params: &["t"],
    merge,
};

pub const DOT_THRESHOLD: f64 = 0.9995;
const EPS: f64 = 1e-8;

fn merge(g: Group) -> Result<Vec<f32>, String> {
    let t = g.shared_num("t")?;
    if !(0.0..=1.0).contains(&t) {
        return Err(format!("t = {t}: must be in [0, 1]"));
    }
    let b = g.base.ok_or("slerp needs a base model")?;
    let (v0, v1) = (&g.tensors[b], &g.tensors[1 - b]);
    Ok(slerp(t, v0, v1))
}

pub fn slerp(t: f64, v0: &[f32], v1: &[f32]) -> Vec<f32> {
    let norm = |v: &[f32]| {
        let n = v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        if n > EPS {
            n
        } else {
            1.0
        }
    };
    let (na, nb) = (norm(v0), norm(v1));
    let dot = v0
        .iter()
        .zip(v1)
        .map(|(&a, &b)| (a as f64 / na) * (b as f64 / nb))
        .sum::<f64>()
        .clamp(-1.0, 1.0);
    let (s0, s1) = if dot.abs() > DOT_THRESHOLD || v0.is_empty() {
        (1.0 - t, t)
    } else {
        let theta = dot.acos();
        let s = theta.sin();
        (((1.0 - t) * theta).sin() / s, (t * theta).sin() / s)
    };
    v0.iter()
        .zip(v1)
        .map(|(&a, &b)| (s0 * a as f64 + s1 * b as f64) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoints_and_colinear_fallback() {
        let (a, b) = ([1.0f32, 0.0], [0.0f32, 1.0]);
        assert_eq!(super::slerp(0.0, &a, &b), vec![1.0, 0.0]);
        let mid = super::slerp(0.5, &a, &b);
        assert!((mid[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        // Colinear: plain lerp of the raw tensors.
        assert_eq!(
            super::slerp(0.25, &[2.0, 4.0], &[1.0, 2.0]),
            vec![1.75, 3.5]
        );
    }
}
