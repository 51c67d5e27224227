//! LiPO-λ (Liu et al. 2024, "LiPO: Listwise Preference Optimization through Learning-to-Rank",
//! arXiv 2402.01878, Eq. 8): each prompt has a list of K responses with labels ψ; with scores
//! s_i = β·(log πθ(y_i|x) − log πref(y_i|x)) (summed response log-probs),
//!
//!   L = Σ_{ψ_i > ψ_j} Δ_ij · log(1 + e^{−(s_i − s_j)}),
//!   Δ_ij = |G_i − G_j| · |1/D(τ_i) − 1/D(τ_j)|,  G = 2^ψ − 1,  D(τ) = log(1 + τ),
//!
//! τ_i the rank of s_i in the list (1 = highest; ties keep list order), the weights constant (no
//! gradient through the ranking). Normalised as the authors' implementation (Rax
//! `pairwise_logistic_loss` with `dcg_lambdaweight`: log₂ discount, weights × K, mean over the
//! list's pairs with ψ_i > ψ_j) — fixture from Rax, tools/fixtures/make_lipo_fixture.py — and
//! averaged over the lists of the step. A two-item list is DPO's logistic loss on the pair times
//! the constant Δ₁₂·K (= 2·(1 − 1/log₂3) for ψ = (1, 0)).
//!
//! Shapes: P lists of K responses are K·P rows, slot-major (every list's first response, then
//! every second, …); `scores` (P, K) holds ψ. Metrics: rewards/chosen and rewards/rejected are the
//! mean rewards of each list's best- and worst-labelled responses, rewards/accuracies the share of
//! each list's ordered pairs (ψ_i > ψ_j) with s_i > s_j.

use candle_core::{Result, Tensor};

use super::dpo::{log_sigmoid, row_logps};
use super::{LossOutput, Objective, TokenBatch};

pub struct Lipo {
    pub beta: f64,
}

/// Rax's pair weights for one list: (K·K) row-major, w[i·K + j] for the pair (i above j).
pub fn lambda_weights(s: &[f32], psi: &[f32]) -> Vec<f64> {
    let k = s.len();
    let mut order: Vec<usize> = (0..k).collect();
    // Stable: equal scores keep their list order.
    order.sort_by(|&a, &b| s[b].partial_cmp(&s[a]).unwrap_or(std::cmp::Ordering::Equal));
    let mut rank = vec![0usize; k];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r + 1;
    }
    let gain = |i: usize| (2f64).powf(psi[i] as f64) - 1.0;
    let discount = |i: usize| 1.0 / (1.0 + rank[i] as f64).log2();
    let pairs = (0..k)
        .flat_map(|i| (0..k).map(move |j| (i, j)))
        .filter(|&(i, j)| psi[i] > psi[j])
        .count();
    let mut w = vec![0f64; k * k];
    if pairs == 0 {
        return w;
    }
    for i in 0..k {
        for j in 0..k {
            if psi[i] > psi[j] {
                let delta = (gain(i) - gain(j)).abs() * (discount(i) - discount(j)).abs();
                w[i * k + j] = delta * k as f64 / pairs as f64;
            }
        }
    }
    w
}

/// Per-list LiPO-λ losses (P) from scores s (P, K) and labels ψ (P, K).
pub fn lipo_loss(s: &Tensor, psi: &Tensor) -> Result<Tensor> {
    let (p, k) = s.dims2()?;
    let sv: Vec<Vec<f32>> = s.detach().to_dtype(candle_core::DType::F32)?.to_vec2()?;
    let pv: Vec<Vec<f32>> = psi.to_dtype(candle_core::DType::F32)?.to_vec2()?;
    let w: Vec<f64> = sv
        .iter()
        .zip(&pv)
        .flat_map(|(s, psi)| lambda_weights(s, psi))
        .collect();
    let w = Tensor::from_vec(w, (p, k, k), s.device())?.to_dtype(s.dtype())?;
    // diff[p, i, j] = s_i − s_j
    let diff = s.unsqueeze(2)?.broadcast_sub(&s.unsqueeze(1)?)?;
    (w * log_sigmoid(&diff)?.neg()?)?.sum((1, 2))
}

impl Objective for Lipo {
    fn name(&self) -> &'static str {
        "lipo"
    }

    fn needs_reference(&self) -> bool {
        true
    }

    fn pairs(&self) -> bool {
        true
    }

    fn lists(&self) -> bool {
        true
    }

    fn loss(&self, b: &TokenBatch) -> Result<LossOutput> {
        let reference = b
            .ref_logps
            .ok_or_else(|| candle_core::Error::Msg("lipo needs reference log-probs".into()))?;
        let psi = b
            .scores
            .ok_or_else(|| candle_core::Error::Msg("lipo needs list scores".into()))?;
        let (p, k) = psi.dims2()?;
        let ratio = (row_logps(b.logps, b.mask, false)? - row_logps(reference, b.mask, false)?)?;
        // (K·P) slot-major → (P, K)
        let s = (ratio.reshape((k, p))?.t()? * self.beta)?;
        let step_lists = b.step_rows / k as f64;
        let loss = (lipo_loss(&s, psi)?.sum_all()? / step_lists)?;
        let sv: Vec<Vec<f32>> = s.detach().to_dtype(candle_core::DType::F32)?.to_vec2()?;
        let pv: Vec<Vec<f32>> = psi.to_dtype(candle_core::DType::F32)?.to_vec2()?;
        let (mut best, mut worst, mut acc) = (0.0, 0.0, 0.0);
        for (s, psi) in sv.iter().zip(&pv) {
            let pick = |better: bool| {
                (0..k)
                    .reduce(
                        |a, c| match (psi[c] > psi[a]) == better && psi[c] != psi[a] {
                            true => c,
                            false => a,
                        },
                    )
                    .unwrap_or(0)
            };
            best += s[pick(true)] as f64;
            worst += s[pick(false)] as f64;
            let ordered: Vec<(usize, usize)> = (0..k)
                .flat_map(|i| (0..k).map(move |j| (i, j)))
                .filter(|&(i, j)| psi[i] > psi[j])
                .collect();
            let right = ordered.iter().filter(|&&(i, j)| s[i] > s[j]).count();
            acc += right as f64 / ordered.len().max(1) as f64;
        }
        Ok(LossOutput {
            loss,
            metrics: vec![
                ("rewards/chosen", best / step_lists),
                ("rewards/rejected", worst / step_lists),
                ("rewards/margins", (best - worst) / step_lists),
                ("rewards/accuracies", acc / step_lists),
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Loss and gradient equal Rax's (tools/fixtures/make_lipo_fixture.py) on lists of 2–4
    /// responses, tied labels and tied scores included.
    #[test]
    fn equals_rax() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/preference/lipo.json"
        );
        let cases: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(cases.len(), 5);
        let v = |c: &serde_json::Value, k: &str| -> Vec<f64> {
            serde_json::from_value(c[k].clone()).unwrap()
        };
        for c in &cases {
            let beta = c["beta"].as_f64().unwrap();
            let (pol, refs, psi) = (v(c, "policy"), v(c, "reference"), v(c, "labels"));
            let k = pol.len();
            let policy = Var::from_vec(pol, (1, k), &Device::Cpu).unwrap();
            let reference = Tensor::from_vec(refs, (1, k), &Device::Cpu).unwrap();
            let s = ((policy.as_tensor() - reference).unwrap() * beta).unwrap();
            let psi = Tensor::from_vec(psi, (1, k), &Device::Cpu).unwrap();
            let loss = lipo_loss(&s, &psi).unwrap().sum_all().unwrap();
            let got = loss.to_scalar::<f64>().unwrap();
            let want = c["loss"].as_f64().unwrap();
            assert!((got - want).abs() <= 1e-6 * want.abs(), "{got} vs {want}");
            let g: Vec<f64> = loss
                .backward()
                .unwrap()
                .get(&policy)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for (a, b) in g.iter().zip(v(c, "grad")) {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1e-3),
                    "{g:?} vs {:?}",
                    v(c, "grad")
                );
            }
        }
    }

    #[test]
    fn two_items_are_dpo_times_a_constant() {
        let s = Tensor::new(&[[0.3f64, -0.2]], &Device::Cpu).unwrap();
        let psi = Tensor::new(&[[1f64, 0.0]], &Device::Cpu).unwrap();
        let got = lipo_loss(&s, &psi)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let dpo = (1.0 + (-0.5f64).exp()).ln();
        let c = 2.0 * (1.0 - 1.0 / 3f64.log2());
        assert!((got - c * dpo).abs() < 1e-12);
    }
}
