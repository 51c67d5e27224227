//! The task-vector family (mergekit 0.1.5 `generalized_task_arithmetic.py`, `sparsify.py`):
//! deltas dᵢ = xᵢ − base, optionally sparsified, times `weight`; then
//! - `task_arithmetic` (Ilharco et al. 2023): Σ dᵢ;
//! - `ties` (Yadav et al. 2023, TIES-Merging): each delta keeps its top `density` fraction by
//!   magnitude, then the elementwise majority sign of Σ dᵢ (≥ 0 is +) elects which deltas count;
//! - `dare_linear` / `dare_ties` (Yu et al. 2024, DARE): each element kept with probability
//!   `density`, the kept ones rescaled so the delta's L1 norm is unchanged (`rescale`, default on —
//!   mergekit's rule, not 1/density), then as task arithmetic / TIES.
//! With `normalize` the mix is divided by Σ wᵢ (TIES: elementwise, by the weights of the deltas
//! that agree with the elected sign; a zero divisor counts as 1), then times `lambda`; the output
//! is base + mix. Defaults as mergekit: normalize on for ties only, rescale on for dare.

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::Value;

use super::{shared, Base, Group, Spec};

#[derive(Clone, Copy, PartialEq)]
enum Sparsify {
    None,
    Magnitude,
    Random,
}

macro_rules! family {
    ($const:ident, $name:literal, $consensus:expr, $sparsify:expr, $normalize:expr, $rescale:expr) => {
        pub const $const: Spec = Spec {
            name: $name,
            base: Base::Required,
            min_inputs: 1,
            max_inputs: None,
            input_params: &[("weight", None), ("density", Some(1.0))],
            non_base_only: true,
            shared_params: || {
                shared(&[
                    ("normalize", Value::Bool($normalize)),
                    ("rescale", Value::Bool($rescale)),
                    ("lambda", Value::from(1.0)),
                    ("int8_mask", Value::Bool(false)),
                ])
            },
            required_params: &[],
            merge: |g| merge(g, $consensus, $sparsify),
        };
    };
}

family!(
    TASK_ARITHMETIC,
    "task_arithmetic",
    false,
    Sparsify::None,
    false,
    false
);
family!(TIES, "ties", true, Sparsify::Magnitude, true, false);
family!(
    DARE_LINEAR,
    "dare_linear",
    false,
    Sparsify::Random,
    false,
    true
);
family!(DARE_TIES, "dare_ties", true, Sparsify::Random, false, true);

/// Keeps the `density` fraction of largest |d| (k = max(1, ⌊density·n⌋)), zeroing the rest;
/// at the cut, equal magnitudes go to the lower index. The k-th magnitude is found by
/// selection, O(n), not by sorting.
fn magnitude(d: &mut [f32], density: f64) {
    if density >= 1.0 {
        return;
    }
    if density <= 0.0 {
        d.iter_mut().for_each(|x| *x = 0.0);
        return;
    }
    let k = ((density * d.len() as f64) as usize).clamp(1, d.len());
    let mut mags: Vec<f32> = d.iter().map(|x| x.abs()).collect();
    let (_, &mut kth, _) = mags.select_nth_unstable_by(d.len() - k, f32::total_cmp);
    drop(mags);
    let above = d.iter().filter(|x| x.abs() > kth).count();
    let mut at_cut = k - above;
    for x in d.iter_mut() {
        let m = x.abs();
        if m > kth {
            continue;
        }
        if m == kth && at_cut > 0 {
            at_cut -= 1;
            continue;
        }
        *x = 0.0;
    }
}

/// Bernoulli(density) keep mask, then (with `rescale`) the kept values scaled by
/// Σ|d| / Σ|kept d| (skipped when either is below 1e-7).
fn random(d: &mut [f32], density: f64, rescale: bool, rng: &mut StdRng) {
    if density >= 1.0 {
        return;
    }
    let before: f64 = d.iter().map(|x| x.abs() as f64).sum();
    for x in d.iter_mut() {
        if rng.random::<f64>() >= density {
            *x = 0.0;
        }
    }
    let after: f64 = d.iter().map(|x| x.abs() as f64).sum();
    if rescale && before >= 1e-7 && after >= 1e-7 {
        let s = (before / after) as f32;
        d.iter_mut().for_each(|x| *x *= s);
    }
}

fn merge(mut g: Group, consensus: bool, sparsify: Sparsify) -> Result<Vec<f32>, String> {
    let b = g.base.ok_or("this method needs a base model")?;
    let (normalize, rescale, lambda) = (
        g.flag("normalize")?,
        g.flag("rescale")?,
        g.shared_num("lambda")?,
    );
    // Deltas in f32, the inputs' dtype, as mergekit computes them; the mix accumulates in f64.
    // Each input becomes its delta in place and the base becomes the output: memory holds the
    // tensor group, not copies of it.
    let mut tensors = std::mem::take(&mut g.tensors);
    let mut base = std::mem::take(&mut tensors[b]);
    let mut deltas: Vec<Vec<f32>> = Vec::new();
    let mut weights: Vec<f64> = Vec::new();
    for (i, t) in tensors.into_iter().enumerate() {
        if i == b {
            continue;
        }
        let (w, density) = (g.num(i, "weight")?, g.num(i, "density")?);
        let mut d = t;
        d.iter_mut().zip(&base).for_each(|(x, &y)| *x -= y);
        match sparsify {
            Sparsify::None => {}
            Sparsify::Magnitude => magnitude(&mut d, density),
            Sparsify::Random => {
                let mut rng =
                    StdRng::seed_from_u64(g.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                random(&mut d, density, rescale, &mut rng)
            }
        }
        d.iter_mut().for_each(|x| *x = (*x as f64 * w) as f32);
        deltas.push(d);
        weights.push(w);
    }
    if deltas.is_empty() {
        return Ok(base);
    }
    let total_w: f64 = weights.iter().sum();
    for (j, out) in base.iter_mut().enumerate() {
        {
            let (mix, div) = if consensus {
                let sign = if deltas.iter().map(|d| d[j] as f64).sum::<f64>() >= 0.0 {
                    1.0
                } else {
                    -1.0
                };
                let mut mix = 0.0;
                let mut div = 0.0;
                for (d, w) in deltas.iter().zip(&weights) {
                    // sign(0) = 0 never equals the elected ±1.
                    if d[j] != 0.0 && d[j].signum() as f64 == sign {
                        mix += d[j] as f64;
                        div += w;
                    }
                }
                (mix, if div == 0.0 { 1.0 } else { div })
            } else {
                let mix = deltas.iter().map(|d| d[j] as f64).sum::<f64>();
                (mix, if total_w.abs() < 1e-8 { 1.0 } else { total_w })
            };
            let mut mix = if normalize { mix / div } else { mix };
            mix *= lambda;
            *out = (*out as f64 + mix) as f32;
        }
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnitude_keeps_the_largest() {
        let mut d = vec![0.1, -0.5, 0.3, 0.05];
        magnitude(&mut d, 0.5);
        assert_eq!(d, vec![0.0, -0.5, 0.3, 0.0]);
    }

    #[test]
    fn dare_keeps_about_density_and_the_l1_norm() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut d: Vec<f32> = (0..20_000)
            .map(|i| ((i % 7) as f32 - 3.0) * 0.01 + 0.001)
            .collect();
        let before: f64 = d.iter().map(|x| x.abs() as f64).sum();
        random(&mut d, 0.3, true, &mut rng);
        let kept = d.iter().filter(|x| **x != 0.0).count() as f64 / d.len() as f64;
        assert!((kept - 0.3).abs() < 0.01, "{kept}");
        let after: f64 = d.iter().map(|x| x.abs() as f64).sum();
        assert!((after - before).abs() < 1e-5 * before);
    }
}
