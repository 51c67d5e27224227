//! RSO's statistical rejection sampling (Liu et al. 2023, "Statistical Rejection Sampling
//! Improves Preference Optimization", arXiv 2309.06657, Algorithm 1 in appendix A.1): from N
//! candidates sampled from the SFT policy, with rewards r, draw M that follow the optimal policy
//! π_r(y) ∝ π_sft(y)·exp(r(y)/β) — round after round, r_max is the highest reward still in the
//! pool; each remaining candidate, in order, is accepted when u < exp((r − r_max)/β), u ~ U[0,1),
//! until M are accepted; accepted ones leave the pool (so the best remaining is accepted for sure
//! each round). Candidates are kept by position, not by text as the paper's dict keys them:
//! two equal draws are two draws of π_sft.
//!
//! Then pairs, labelled by reward (higher = chosen; equal rewards make no pair): `first_round`
//! (the paper's default "first-round ranking": the M samples paired at random, M/2 pairs) or
//! `tournament` (random games, each winner going on, M−1 pairs). Paper defaults: N = 64, M = 8,
//! β = 0.5; the pairs then train `dpo` (sigmoid-norm) or `slic` (hinge), γ = 0.05 there.

use rand::{rngs::StdRng, seq::SliceRandom, Rng};

/// Algorithm 1: the positions of the accepted candidates, in acceptance order. `rewards` must be
/// finite, `beta` > 0; asks for at most `rewards.len()` samples.
pub fn rejection_sample(
    rewards: &[f64],
    num_samples: usize,
    beta: f64,
    rng: &mut StdRng,
) -> Vec<usize> {
    let mut pool: Vec<usize> = (0..rewards.len()).collect();
    let mut accepted = Vec::new();
    let want = num_samples.min(rewards.len());
    while accepted.len() < want {
        let max = pool
            .iter()
            .map(|&i| rewards[i])
            .fold(f64::NEG_INFINITY, f64::max);
        let mut taken = Vec::new();
        for &i in &pool {
            let u: f64 = rng.random();
            if u >= ((rewards[i] - max) / beta).exp() {
                continue;
            }
            taken.push(i);
            accepted.push(i);
            if accepted.len() == want {
                break;
            }
        }
        pool.retain(|i| !taken.contains(i));
    }
    accepted
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairing {
    FirstRound,
    Tournament,
}

impl std::str::FromStr for Pairing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "first-round" => Ok(Self::FirstRound),
            "tournament" => Ok(Self::Tournament),
            _ => Err(format!("`{s}`: first-round or tournament")),
        }
    }
}

/// (chosen, rejected) positions from the accepted samples; pairs with equal rewards are skipped
/// (returned count).
pub fn make_pairs(
    accepted: &[usize],
    rewards: &[f64],
    pairing: Pairing,
    rng: &mut StdRng,
) -> (Vec<(usize, usize)>, usize) {
    let mut order = accepted.to_vec();
    order.shuffle(rng);
    let mut pairs = Vec::new();
    let mut ties = 0;
    let mut game = |a: usize, b: usize, pairs: &mut Vec<(usize, usize)>| {
        let (w, l) = if rewards[a] >= rewards[b] {
            (a, b)
        } else {
            (b, a)
        };
        if rewards[w] == rewards[l] {
            ties += 1;
        } else {
            pairs.push((w, l));
        }
        w
    };
    match pairing {
        Pairing::FirstRound => {
            for c in order.chunks_exact(2) {
                game(c[0], c[1], &mut pairs);
            }
        }
        Pairing::Tournament => {
            while order.len() > 1 {
                let mut next: Vec<usize> = order
                    .chunks_exact(2)
                    .map(|c| game(c[0], c[1], &mut pairs))
                    .collect();
                if order.len() % 2 == 1 {
                    next.push(*order.last().expect("odd"));
                }
                order = next;
            }
        }
    }
    (pairs, ties)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Theorem 1: with many i.i.d. candidates from π_sft, an accepted sample follows
    /// π_r ∝ π_sft·exp(r/β).
    #[test]
    fn samples_follow_the_optimal_policy() {
        let (p_sft, reward, beta): ([f64; 3], [f64; 3], f64) =
            ([0.5, 0.3, 0.2], [0.0, 1.0, 2.0], 1.0);
        let target: Vec<f64> = {
            let w: Vec<f64> = (0..3)
                .map(|i| p_sft[i] * (reward[i] / beta).exp())
                .collect();
            let z: f64 = w.iter().sum();
            w.iter().map(|x| x / z).collect()
        };
        let mut rng = StdRng::seed_from_u64(1);
        let mut counts = [0usize; 3];
        let trials = 20_000;
        for _ in 0..trials {
            // 200 draws from π_sft
            let kinds: Vec<usize> = (0..200)
                .map(|_| {
                    let u: f64 = rng.random();
                    if u < 0.5 {
                        0
                    } else if u < 0.8 {
                        1
                    } else {
                        2
                    }
                })
                .collect();
            let rewards: Vec<f64> = kinds.iter().map(|&k| reward[k]).collect();
            let got = rejection_sample(&rewards, 1, beta, &mut rng);
            counts[kinds[got[0]]] += 1;
        }
        for k in 0..3 {
            let share = counts[k] as f64 / trials as f64;
            // binomial sd ≤ 0.0036: within 4 sd
            assert!(
                (share - target[k]).abs() < 0.015,
                "{k}: {share} vs {}",
                target[k]
            );
        }
    }

    #[test]
    fn accepts_distinct_candidates_and_the_best_first_when_beta_is_small() {
        let rewards = [0.3, 2.0, -1.0, 1.5, 0.0, 0.9];
        let mut rng = StdRng::seed_from_u64(0);
        let got = rejection_sample(&rewards, 4, 0.5, &mut rng);
        let mut sorted = got.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 4);
        // β → 0: top-k by reward
        let got = rejection_sample(&rewards, 3, 1e-6, &mut rng);
        assert_eq!(got, vec![1, 3, 5]);
        assert_eq!(rejection_sample(&rewards, 10, 0.5, &mut rng).len(), 6);
    }

    #[test]
    fn pairings() {
        let rewards = [5.0, 1.0, 3.0, 3.0, 0.0, 2.0, 4.0, 6.0];
        let accepted: Vec<usize> = (0..8).collect();
        let mut rng = StdRng::seed_from_u64(3);
        let (pairs, ties) = make_pairs(&accepted, &rewards, Pairing::FirstRound, &mut rng);
        assert_eq!(pairs.len() + ties, 4);
        assert!(pairs.iter().all(|&(w, l)| rewards[w] > rewards[l]));
        let (pairs, ties) = make_pairs(&accepted, &rewards, Pairing::Tournament, &mut rng);
        assert_eq!(pairs.len() + ties, 7);
        // the best candidate wins every game it plays: it is never rejected
        assert!(pairs.iter().all(|&(_, l)| l != 7));
    }
}
