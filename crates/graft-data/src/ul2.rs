//! UL2's mixture of denoisers (Tay et al. 2022, "UL2: Unifying Language Learning Paradigms",
//! §3.1.2; the appendix's `ul2_objective`): each segment of a document is turned into an
//! (inputs, targets) pair by one denoiser drawn from the mixture —
//!   R (regular span corruption): (μ=3, r=0.15), (μ=8, r=0.15), mode token `[NLU]`;
//!   X (extreme): (μ=3, r=0.5), (μ=8, r=0.5), (μ=64, r=0.15), (μ=64, r=0.5), mode token `[NLG]`;
//!   S (sequential, prefix LM): prefix length uniform in [1, L−1] as t5's
//!     `random_prefix_noise_mask`, the rest is the target, no sentinel; mode token `[S2S]`.
//! R and X are T5 span corruption (`span_corruption.rs`) with their own μ and r; each segment's
//! raw length comes from `random_spans_helper` so the corrupted inputs fill `inputs_length`
//! (mode token included). The mode token is text, tokenized and prepended to the inputs, as the
//! released UL2 checkpoints expect. Denoisers are drawn uniformly unless `rates` are given (the
//! appendix code: "If None, tasks are sampled uniformly").

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::span_corruption::{
    noise_mask, noise_span_to_unique_sentinel, nonnoise_span_to_unique_sentinel,
    random_spans_helper, SpanCorruption,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Denoiser {
    /// "R", "X" (span corruption) or "S" (prefix LM).
    pub kind: String,
    #[serde(default)]
    pub mean_noise_span_length: f64,
    #[serde(default)]
    pub noise_density: f64,
    /// Prepended to the inputs; default `[NLU]` for R, `[NLG]` for X, `[S2S]` for S.
    #[serde(default)]
    pub mode_token: Option<String>,
}

impl Denoiser {
    pub fn mode_token(&self) -> &str {
        self.mode_token
            .as_deref()
            .unwrap_or(match self.kind.as_str() {
                "R" => "[NLU]",
                "X" => "[NLG]",
                _ => "[S2S]",
            })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ul2 {
    /// Empty: UL2's seven denoisers.
    #[serde(default)]
    pub denoisers: Vec<Denoiser>,
    /// Sampling rates, one per denoiser (normalised); empty: uniform.
    #[serde(default)]
    pub rates: Vec<f64>,
    /// Prepend the mode tokens (default true).
    #[serde(default = "yes")]
    pub mode_tokens: bool,
}

fn yes() -> bool {
    true
}

impl Default for Ul2 {
    fn default() -> Self {
        Self {
            denoisers: Vec::new(),
            rates: Vec::new(),
            mode_tokens: true,
        }
    }
}

/// UL2's seven denoisers (§3.1.2).
pub fn paper_denoisers() -> Vec<Denoiser> {
    let d = |kind: &str, mu: f64, r: f64| Denoiser {
        kind: kind.into(),
        mean_noise_span_length: mu,
        noise_density: r,
        mode_token: None,
    };
    vec![
        d("R", 3.0, 0.15),
        d("R", 8.0, 0.15),
        d("X", 3.0, 0.5),
        d("X", 8.0, 0.5),
        d("X", 64.0, 0.15),
        d("X", 64.0, 0.5),
        d("S", 0.0, 0.25),
    ]
}

impl Ul2 {
    /// The denoisers in use and their cumulative sampling weights; errors name the bad field.
    pub fn resolved(&self) -> Result<(Vec<Denoiser>, Vec<f64>), String> {
        let ds = if self.denoisers.is_empty() {
            paper_denoisers()
        } else {
            self.denoisers.clone()
        };
        for (i, d) in ds.iter().enumerate() {
            match d.kind.as_str() {
                "R" | "X" => {
                    if !(d.noise_density > 0.0 && d.noise_density < 1.0)
                        || d.mean_noise_span_length < 1.0
                    {
                        return Err(format!(
                            "ul2.denoisers[{i}]: noise_density must be in (0, 1) and mean_noise_span_length ≥ 1"
                        ));
                    }
                }
                "S" => {}
                other => {
                    return Err(format!(
                        "ul2.denoisers[{i}].kind: `{other}` is not R, X or S"
                    ))
                }
            }
        }
        let rates = if self.rates.is_empty() {
            vec![1.0; ds.len()]
        } else if self.rates.len() != ds.len()
            || self.rates.iter().any(|&r| r < 0.0 || !r.is_finite())
        {
            return Err(format!(
                "ul2.rates: {} non-negative rates for {} denoisers",
                self.rates.len(),
                ds.len()
            ));
        } else {
            self.rates.clone()
        };
        let total: f64 = rates.iter().sum();
        if total <= 0.0 {
            return Err("ul2.rates: all zero".into());
        }
        let mut acc = 0.0;
        let cumulative = rates
            .iter()
            .map(|r| {
                acc += r / total;
                acc
            })
            .collect();
        Ok((ds, cumulative))
    }
}

/// One (inputs, targets) pair per segment of `tokens`, each from a denoiser drawn with `rates`.
/// `mode_ids[i]`: the tokenized mode token of denoiser i (empty when mode tokens are off). Inputs
/// and targets end with `eos`. Draws are a function of (seed, doc).
#[allow(clippy::too_many_arguments)]
pub fn ul2_document(
    tokens: &[u32],
    inputs_length: usize,
    denoisers: &[Denoiser],
    cumulative: &[f64],
    mode_ids: &[Vec<u32>],
    first_sentinel: u32,
    eos: u32,
    seed: u64,
    doc: u64,
) -> Vec<(Vec<u32>, Vec<u32>)> {
    let mut rng = StdRng::seed_from_u64(seed ^ doc.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut out = Vec::new();
    let mut rest = tokens;
    while !rest.is_empty() {
        let u: f64 = rng.random();
        let i = cumulative
            .iter()
            .position(|&c| u < c)
            .unwrap_or(denoisers.len() - 1);
        let d = &denoisers[i];
        let mode = &mode_ids[i];
        let room = inputs_length.saturating_sub(mode.len()).max(2);
        let (mut inputs, mut targets) = if d.kind == "S" {
            // Prefix LM: the segment fills the inputs budget (minus EOS); prefix uniform in [1, L−1].
            let seg = rest.len().min(room - 1).max(1);
            let chunk = &rest[..seg];
            rest = &rest[seg..];
            let split = if chunk.len() < 2 {
                chunk.len()
            } else {
                rng.random_range(1..chunk.len())
            };
            (chunk[..split].to_vec(), chunk[split..].to_vec())
        } else {
            let cfg = SpanCorruption {
                noise_density: d.noise_density,
                mean_noise_span_length: d.mean_noise_span_length,
            };
            let (seg, _) = random_spans_helper(room, cfg.noise_density, cfg.mean_noise_span_length);
            let seg = seg.clamp(1, rest.len());
            let chunk = &rest[..seg];
            rest = &rest[seg..];
            let mask = noise_mask(chunk.len(), &cfg, rng.random());
            (
                noise_span_to_unique_sentinel(chunk, &mask, first_sentinel),
                nonnoise_span_to_unique_sentinel(chunk, &mask, first_sentinel),
            )
        };
        let mut with_mode = mode.clone();
        with_mode.append(&mut inputs);
        inputs = with_mode;
        // float32 rounding in the mask can add a sentinel the float64 helper did not count; the
        // feature converter would trim it, graft trims here.
        inputs.truncate(inputs_length.saturating_sub(1));
        inputs.push(eos);
        targets.push(eos);
        out.push((inputs, targets));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paper_mixture_fills_the_inputs_and_uses_each_denoiser() {
        let (ds, cum) = Ul2::default().resolved().unwrap();
        assert_eq!(ds.len(), 7);
        let modes: Vec<Vec<u32>> = ds
            .iter()
            .map(|d| match d.mode_token() {
                "[NLU]" => vec![900],
                "[NLG]" => vec![901],
                _ => vec![902, 903],
            })
            .collect();
        let tokens: Vec<u32> = (0..20_000).map(|i| i % 800).collect();
        let pairs = ul2_document(&tokens, 128, &ds, &cum, &modes, 999, 850, 7, 0);
        let mut seen = [0usize; 3];
        let mut used = 0;
        for (inputs, targets) in &pairs {
            assert!(inputs.len() <= 128, "inputs {}", inputs.len());
            assert_eq!(*inputs.last().unwrap(), 850);
            assert_eq!(*targets.last().unwrap(), 850);
            match inputs[0] {
                900 => seen[0] += 1,
                901 => seen[1] += 1,
                902 => {
                    seen[2] += 1;
                    assert!(
                        !inputs.iter().any(|&t| t >= 950) && !targets.iter().any(|&t| t >= 950),
                        "S: no sentinels"
                    );
                }
                t => panic!("no mode token: {t}"),
            }
            // Every original token is in the inputs or the targets exactly once.
            used += inputs.iter().chain(targets).filter(|&&t| t < 800).count();
        }
        assert_eq!(used, tokens.len());
        assert!(seen.iter().all(|&n| n > 5), "{seen:?}");
    }

    #[test]
    fn bad_configs_are_named() {
        let bad = Ul2 {
            rates: vec![1.0, 2.0],
            ..Default::default()
        };
        assert!(bad.resolved().unwrap_err().contains("ul2.rates"));
        let bad = Ul2 {
            denoisers: vec![Denoiser {
                kind: "Q".into(),
                mean_noise_span_length: 3.0,
                noise_density: 0.15,
                mode_token: None,
            }],
            ..Default::default()
        };
        assert!(bad.resolved().unwrap_err().contains("kind"));
    }
}
