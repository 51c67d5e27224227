//! T5 span corruption with the semantics of `t5.data.preprocessors` (seqio's T5 tasks):
//! `random_spans_helper` (how long a token segment must be so its corrupted input is exactly
//! `inputs_length` long), `random_spans_noise_mask` (round(length·density) noise tokens in
//! round(noise/mean_span) spans; spans alternate non-noise, noise, … starting with non-noise; span
//! lengths are random segmentations), and `noise_span_to_unique_sentinel` (each noise span becomes
//! one sentinel: `<extra_id_0>`, `<extra_id_1>`, … numbered downward from the first sentinel's id;
//! the targets are the complement). Rounding is Python's/TensorFlow's (half to even).
//!
//! The random segmentation uses graft's seeded RNG, not TensorFlow's stateless shuffle: masks
//! follow the same distribution as seqio's, not the same draws.

use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

/// Span-corruption settings (T5's defaults: 15% noise, mean span length 3).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanCorruption {
    #[serde(default = "density")]
    pub noise_density: f64,
    #[serde(default = "mean_span")]
    pub mean_noise_span_length: f64,
}

fn density() -> f64 {
    0.15
}
fn mean_span() -> f64 {
    3.0
}

impl Default for SpanCorruption {
    fn default() -> Self {
        Self {
            noise_density: density(),
            mean_noise_span_length: mean_span(),
        }
    }
}

/// Python's `round` (half to even) as an integer.
fn round(x: f64) -> usize {
    x.round_ties_even().max(0.0) as usize
}

/// `random_spans_helper`: the raw token-segment length whose corruption fills `inputs_length`
/// (EOS included) and the resulting targets length, one sentinel per span on each side.
pub fn random_spans_helper(
    inputs_length: usize,
    noise_density: f64,
    mean_noise_span_length: f64,
) -> (usize, usize) {
    let lengths = |tokens: usize| {
        let noise = round(tokens as f64 * noise_density);
        let spans = round(noise as f64 / mean_noise_span_length);
        (tokens - noise + spans + 1, noise + spans + 1)
    };
    let mut tokens = inputs_length.saturating_sub(1);
    while lengths(tokens + 1).0 <= inputs_length {
        tokens += 1;
    }
    let (inputs, mut targets) = lengths(tokens);
    // t5's adjustment: at density 0.5 make targets no longer than the (round) inputs length.
    if noise_density == 0.5 && targets > inputs {
        tokens -= 1;
        targets -= 1;
    }
    (tokens, targets)
}

/// Lengths of `segments` random non-empty segments of `items` (they sum to `items`).
fn random_segmentation(items: usize, segments: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut first: Vec<bool> = (0..items.saturating_sub(1))
        .map(|i| i + 1 < segments)
        .collect();
    first.shuffle(rng);
    let mut lengths = vec![1usize];
    for f in first {
        if f {
            lengths.push(1);
        } else {
            *lengths.last_mut().expect("non-empty") += 1;
        }
    }
    lengths
}

/// `random_spans_noise_mask`: true at noise positions.
pub fn noise_mask(length: usize, cfg: &SpanCorruption, seed: u64) -> Vec<bool> {
    if cfg.noise_density == 0.0 || length == 0 {
        return vec![false; length];
    }
    let orig = length;
    let length = length.max(2);
    // tf.round in float32, as t5 computes it
    let noise = ((length as f32 * cfg.noise_density as f32).round_ties_even() as usize)
        .clamp(1, length - 1);
    let spans =
        ((noise as f32 / cfg.mean_noise_span_length as f32).round_ties_even() as usize).max(1);
    // seqio fails when there are fewer non-noise tokens than spans; graft uses fewer spans.
    let spans = spans.min(length - noise);
    let mut rng = StdRng::seed_from_u64(seed);
    let noise_lengths = random_segmentation(noise, spans, &mut rng);
    let plain_lengths = random_segmentation(length - noise, spans, &mut rng);
    let mut mask = Vec::with_capacity(length);
    for (p, n) in plain_lengths.iter().zip(&noise_lengths) {
        mask.extend(std::iter::repeat_n(false, *p));
        mask.extend(std::iter::repeat_n(true, *n));
    }
    mask.truncate(orig);
    mask
}

/// `noise_span_to_unique_sentinel`: each run of noise tokens becomes one sentinel (the first is
/// `first_sentinel`, the next `first_sentinel − 1`, …); other tokens are kept.
pub fn noise_span_to_unique_sentinel(
    tokens: &[u32],
    mask: &[bool],
    first_sentinel: u32,
) -> Vec<u32> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut next = first_sentinel;
    for (i, (&t, &noise)) in tokens.iter().zip(mask).enumerate() {
        let prev_noise = i > 0 && mask[i - 1];
        if noise && !prev_noise {
            out.push(next);
            next = next.wrapping_sub(1);
        } else if !noise {
            out.push(t);
        }
    }
    out
}

/// `nonnoise_span_to_unique_sentinel`: the targets, the complement of the inputs.
pub fn nonnoise_span_to_unique_sentinel(
    tokens: &[u32],
    mask: &[bool],
    first_sentinel: u32,
) -> Vec<u32> {
    let inverted: Vec<bool> = mask.iter().map(|&m| !m).collect();
    noise_span_to_unique_sentinel(tokens, &inverted, first_sentinel)
}

/// One document's (inputs, targets) pairs: the tokens split into segments of the length
/// `random_spans_helper` gives for `inputs_length`, each corrupted and closed with `eos`.
/// Segment k of document `doc` draws its mask from seed f(seed, doc, k).
pub fn corrupt_document(
    tokens: &[u32],
    inputs_length: usize,
    cfg: &SpanCorruption,
    first_sentinel: u32,
    eos: u32,
    seed: u64,
    doc: u64,
) -> Vec<(Vec<u32>, Vec<u32>)> {
    let (segment, _) =
        random_spans_helper(inputs_length, cfg.noise_density, cfg.mean_noise_span_length);
    tokens
        .chunks(segment.max(1))
        .enumerate()
        .map(|(k, chunk)| {
            let s = seed
                ^ doc.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ (k as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
            let mask = noise_mask(chunk.len(), cfg, s);
            let mut inputs = noise_span_to_unique_sentinel(chunk, &mask, first_sentinel);
            let mut targets = nonnoise_span_to_unique_sentinel(chunk, &mask, first_sentinel);
            // float32 rounding in the mask can add one sentinel the helper did not count; the
            // feature converter would trim it.
            inputs.truncate(inputs_length.saturating_sub(1));
            inputs.push(eos);
            targets.push(eos);
            (inputs, targets)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_have_t5s_counts_and_alternate_from_non_noise() {
        let cfg = SpanCorruption::default();
        for length in [2usize, 7, 10, 100, 568] {
            for seed in 0..20 {
                let m = noise_mask(length, &cfg, seed);
                assert_eq!(m.len(), length);
                let noise = m.iter().filter(|&&x| x).count();
                let want = ((length as f32 * 0.15).round_ties_even() as usize).clamp(1, length - 1);
                assert_eq!(noise, want, "length {length}");
                let spans = (0..length)
                    .filter(|&i| m[i] && (i == 0 || !m[i - 1]))
                    .count();
                let want_spans = ((want as f32 / 3.0).round_ties_even() as usize)
                    .max(1)
                    .min(length - want);
                assert_eq!(spans, want_spans, "length {length}");
                assert!(!m[0], "spans start with non-noise");
            }
        }
    }

    #[test]
    fn inputs_and_targets_interleave_back_to_the_tokens() {
        let cfg = SpanCorruption::default();
        let tokens: Vec<u32> = (10..60).collect();
        let m = noise_mask(tokens.len(), &cfg, 3);
        let inputs = noise_span_to_unique_sentinel(&tokens, &m, 99);
        let targets = nonnoise_span_to_unique_sentinel(&tokens, &m, 99);
        // Replace each sentinel in the inputs by the tokens that follow it in the targets.
        let mut rebuilt = Vec::new();
        for &t in &inputs {
            if t >= 90 {
                let at = targets.iter().position(|&x| x == t).unwrap();
                rebuilt.extend(targets[at + 1..].iter().take_while(|&&x| x < 90));
            } else {
                rebuilt.push(t);
            }
        }
        assert_eq!(rebuilt, tokens);
    }
}
