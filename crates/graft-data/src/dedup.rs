//! Deduplication: exact (same text after whitespace normalisation) and near-duplicate by MinHash
//! + LSH (Broder 1997; banding as in datasketch's `MinHashLSH`): documents are sets of word
//! n-gram shingles; `num_perm` hash permutations `(a·h + b) mod (2^61 − 1)` give the signature;
//! `bands × rows = num_perm` bands bucket candidate pairs, chosen to minimise the weighted false
//! positive + false negative probability at the Jaccard `threshold` (datasketch's
//! `_optimal_param`, equal weights); a candidate is a duplicate when its estimated Jaccard (share
//! of equal signature slots) reaches the threshold. The first occurrence is kept.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::decontaminate::words;

const PRIME: u64 = (1 << 61) - 1;

#[derive(Debug, Clone)]
pub struct MinHashConfig {
    pub num_perm: usize,
    pub ngram: usize,
    pub threshold: f64,
    pub seed: u64,
}

impl Default for MinHashConfig {
    fn default() -> Self {
        Self {
            num_perm: 128,
            ngram: 5,
            threshold: 0.8,
            seed: 1,
        }
    }
}

/// Why a document was dropped: an exact or near copy of an earlier one (its index).
#[derive(Debug, Clone, PartialEq)]
pub enum Duplicate {
    Exact { of: usize },
    Near { of: usize, jaccard: f64 },
}

fn hash_str(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// Word n-gram shingles of a text, hashed (a short text is one shingle).
pub fn shingles(text: &str, n: usize) -> Vec<u64> {
    let n = n.max(1);
    let w = words(text);
    if w.is_empty() {
        return Vec::new();
    }
    if w.len() < n {
        return vec![hash_str(&w.join(" "))];
    }
    let mut out: Vec<u64> = w.windows(n).map(|g| hash_str(&g.join(" "))).collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn mulmod(a: u64, b: u64) -> u64 {
    ((a as u128 * b as u128) % PRIME as u128) as u64
}

pub struct MinHasher {
    perms: Vec<(u64, u64)>,
    ngram: usize,
}

impl MinHasher {
    pub fn new(cfg: &MinHashConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let perms = (0..cfg.num_perm)
            .map(|_| (rng.random_range(1..PRIME), rng.random_range(0..PRIME)))
            .collect();
        Self {
            perms,
            ngram: cfg.ngram,
        }
    }

    /// The MinHash signature (`u64::MAX` everywhere for a text without words).
    pub fn signature(&self, text: &str) -> Vec<u64> {
        let sh: Vec<u64> = shingles(text, self.ngram)
            .iter()
            .map(|h| h % PRIME)
            .collect();
        self.perms
            .iter()
            .map(|&(a, b)| {
                sh.iter()
                    .map(|&x| (mulmod(a, x) + b) % PRIME)
                    .min()
                    .unwrap_or(u64::MAX)
            })
            .collect()
    }
}

/// Estimated Jaccard similarity of two signatures.
pub fn estimated_jaccard(a: &[u64], b: &[u64]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
}

fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    let steps = 200;
    let h = (b - a) / steps as f64;
    (0..steps).map(|i| f(a + (i as f64 + 0.5) * h) * h).sum()
}

/// (bands, rows) minimising false positives below and false negatives above `threshold`.
pub fn optimal_bands(threshold: f64, num_perm: usize) -> (usize, usize) {
    let mut best = (1, num_perm);
    let mut best_err = f64::INFINITY;
    for b in 1..=num_perm {
        let max_r = num_perm / b;
        for r in 1..=max_r {
            let p = |s: f64| 1.0 - (1.0 - s.powi(r as i32)).powi(b as i32);
            let fp = integrate(&p, 0.0, threshold);
            let fn_ = integrate(|s| 1.0 - p(s), threshold, 1.0);
            let err = fp + fn_;
            if err < best_err {
                best_err = err;
                best = (b, r);
            }
        }
    }
    best
}

/// Normalised text for exact dedup: words joined by single spaces (case kept).
fn exact_key(text: &str) -> u64 {
    hash_str(&text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// For each text, `None` (kept) or why it duplicates an earlier kept text. `near`: also MinHash.
pub fn find_duplicates(texts: &[String], near: Option<&MinHashConfig>) -> Vec<Option<Duplicate>> {
    let mut out = vec![None; texts.len()];
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for (i, t) in texts.iter().enumerate() {
        match seen.get(&exact_key(t)) {
            Some(&of) => out[i] = Some(Duplicate::Exact { of }),
            None => {
                seen.insert(exact_key(t), i);
            }
        }
    }
    let Some(cfg) = near else { return out };
    let hasher = MinHasher::new(cfg);
    let (bands, rows) = optimal_bands(cfg.threshold, cfg.num_perm);
    let mut buckets: Vec<HashMap<u64, Vec<usize>>> = vec![HashMap::new(); bands];
    let mut sigs: Vec<Option<Vec<u64>>> = vec![None; texts.len()];
    for (i, t) in texts.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        let sig = hasher.signature(t);
        let mut best: Option<(usize, f64)> = None;
        for (band, table) in buckets.iter().enumerate() {
            let key = hash_str(&format!("{:?}", &sig[band * rows..(band + 1) * rows]));
            for &j in table.get(&key).into_iter().flatten() {
                let jac = estimated_jaccard(&sig, sigs[j].as_ref().expect("kept"));
                if jac >= cfg.threshold
                    && best.is_none_or(|(bj, bjac)| jac > bjac || (jac == bjac && j < bj))
                {
                    best = Some((j, jac));
                }
            }
        }
        match best {
            Some((of, jaccard)) => out[i] = Some(Duplicate::Near { of, jaccard }),
            None => {
                for (band, table) in buckets.iter_mut().enumerate() {
                    let key = hash_str(&format!("{:?}", &sig[band * rows..(band + 1) * rows]));
                    table.entry(key).or_default().push(i);
                }
                sigs[i] = Some(sig);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_estimate_jaccard() {
        let h = MinHasher::new(&MinHashConfig {
            num_perm: 256,
            ngram: 1,
            ..Default::default()
        });
        // word sets {a..j} and {a..h, x, y}: Jaccard 8/12
        let a = "a b c d e f g h i j";
        let b = "a b c d e f g h x y";
        let est = estimated_jaccard(&h.signature(a), &h.signature(b));
        assert!((est - 8.0 / 12.0).abs() < 0.1, "{est}");
    }

    #[test]
    fn exact_and_near_copies_are_found_and_the_first_kept() {
        let base = "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife. However little known the feelings or views of such a man may be on his first entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families.";
        let texts = vec![
            base.to_string(),
            "A completely different sentence about the weather in Bath and the pump room."
                .to_string(),
            format!("  {}  ", base.replace(' ', "  ")),
            base.replace("surrounding families", "surrounding family"),
        ];
        let d = find_duplicates(&texts, Some(&MinHashConfig::default()));
        assert_eq!(d[0], None);
        assert_eq!(d[1], None);
        assert_eq!(d[2], Some(Duplicate::Exact { of: 0 }));
        assert!(
            matches!(d[3], Some(Duplicate::Near { of: 0, .. })),
            "{:?}",
            d[3]
        );
    }
}
