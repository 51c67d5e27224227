//! Next-token choice: greedy (`temperature == 0`) or temperature + nucleus (top-p) sampling with a
//! seeded RNG, in transformers' order (temperature, then top-p, then softmax and draw).

use candle_core::{DType, Result, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};

pub struct Sampler {
    temperature: f64,
    top_p: f64,
    rng: StdRng,
}

impl Sampler {
    pub fn new(temperature: f64, top_p: f64, seed: u64) -> Self {
        Self {
            temperature,
            top_p,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Picks a token from logits (V).
    pub fn sample(&mut self, logits: &Tensor) -> Result<u32> {
        let logits: Vec<f32> = logits.to_dtype(DType::F32)?.to_vec1()?;
        if self.temperature <= 0.0 {
            return Ok(argmax(&logits));
        }
        let t = self.temperature as f32;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(usize, f32)> = logits
            .iter()
            .map(|&l| ((l - max) / t).exp())
            .enumerate()
            .collect();
        let total: f32 = probs.iter().map(|p| p.1).sum();
        probs.iter_mut().for_each(|p| p.1 /= total);
        if self.top_p < 1.0 {
            // Keep the smallest head of the distribution whose mass reaches top_p (at least one token).
            probs.sort_by(|a, b| b.1.total_cmp(&a.1));
            let mut mass = 0.0;
            let mut keep = 0;
            for (_, p) in &probs {
                keep += 1;
                mass += p;
                if mass >= self.top_p as f32 {
                    break;
                }
            }
            probs.truncate(keep);
        }
        let total: f32 = probs.iter().map(|p| p.1).sum();
        let mut r = self.rng.random::<f32>() * total;
        for (i, p) in &probs {
            if r < *p {
                return Ok(*i as u32);
            }
            r -= p;
        }
        Ok(probs.last().map_or(0, |p| p.0 as u32))
    }
}

/// First index of the maximum, as `torch.argmax` picks it.
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn greedy_takes_first_maximum() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn top_p_keeps_only_the_head() {
        // p ≈ [0.87, 0.12, 0.01]: with top_p = 0.5 only token 0 can be drawn.
        let logits = Tensor::new(&[4.0f32, 2.0, -0.5], &Device::Cpu).unwrap();
        let mut s = Sampler::new(1.0, 0.5, 7);
        assert!((0..200).all(|_| s.sample(&logits).unwrap() == 0));
    }

    #[test]
    fn sampling_is_seeded() {
        let logits = Tensor::new(&[1.0f32, 1.0, 1.0, 1.0], &Device::Cpu).unwrap();
        let draw = |seed| {
            let mut s = Sampler::new(1.0, 1.0, seed);
            (0..32)
                .map(|_| s.sample(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        assert!(
            draw(3).iter().any(|&t| t != draw(3)[0]),
            "uniform logits should not always give one token"
        );
    }
}
