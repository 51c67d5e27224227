//! Data mixtures: several tasks (row files) sampled with rates — given per task, or by temperature
//! over task sizes (rate ∝ nᵅ, Glot500's α = 0.3 for language sampling) — optionally switching to
//! other rates from a step on (an annealing mix, as OLMo 2's mid-training). Which task each row of
//! a step comes from is a pure function of (seed, step, position); each task keeps its own seeded,
//! resumable order (`Loader`), so a resumed run draws exactly what an uninterrupted one would.

use graft_data::rows::TrainRow;
pub use graft_data::rows::{MixtureSection, SwitchSection, TaskSection};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::loader::Loader;

/// Normalised rates → cumulative thresholds.
fn cumulative(rates: &[f64]) -> Result<Vec<f64>, String> {
    if rates.iter().any(|r| !r.is_finite() || *r < 0.0) {
        return Err("rates must be finite and ≥ 0".into());
    }
    let total: f64 = rates.iter().sum();
    if total <= 0.0 {
        return Err("all rates are 0".into());
    }
    let mut acc = 0.0;
    Ok(rates
        .iter()
        .map(|r| {
            acc += r / total;
            acc
        })
        .collect())
}

/// The base rates: explicit ones, the rest n^α.
pub fn base_rates(tasks: &[TaskSection], sizes: &[usize], mix: &MixtureSection) -> Vec<f64> {
    let alpha = mix.temperature.unwrap_or(1.0);
    tasks
        .iter()
        .zip(sizes)
        .map(|(t, &n)| t.rate.unwrap_or((n as f64).powf(alpha)))
        .collect()
}

pub struct Mixture {
    pub names: Vec<String>,
    pub loaders: Vec<Loader>,
    /// (first step, cumulative rates), sorted by step.
    phases: Vec<(usize, Vec<f64>)>,
    seed: u64,
}

impl Mixture {
    /// One task holding every row: plain seeded epochs.
    pub fn single(rows: Vec<TrainRow>, seed: u64) -> Self {
        Self {
            names: vec!["train".into()],
            loaders: vec![Loader::new(rows, seed)],
            phases: vec![(0, vec![1.0])],
            seed,
        }
    }

    pub fn new(
        tasks: Vec<(TaskSection, Vec<TrainRow>)>,
        mix: &MixtureSection,
        seed: u64,
    ) -> Result<Self, String> {
        let names: Vec<String> = tasks.iter().map(|(t, _)| t.name.clone()).collect();
        let sizes: Vec<usize> = tasks.iter().map(|(_, r)| r.len()).collect();
        let sections: Vec<TaskSection> = tasks.iter().map(|(t, _)| t.clone()).collect();
        let mut phases = vec![(
            0,
            cumulative(&base_rates(&sections, &sizes, mix))
                .map_err(|e| format!("data.tasks: {e}"))?,
        )];
        let mut switches = mix.switch.clone();
        switches.sort_by_key(|s| s.step);
        for s in &switches {
            if let Some(unknown) = s.rates.keys().find(|k| !names.contains(k)) {
                return Err(format!(
                    "data.mixture.switch (step {}): no task named `{unknown}`",
                    s.step
                ));
            }
            let rates: Vec<f64> = names
                .iter()
                .map(|n| s.rates.get(n).copied().unwrap_or(0.0))
                .collect();
            phases.push((
                s.step,
                cumulative(&rates)
                    .map_err(|e| format!("data.mixture.switch (step {}): {e}", s.step))?,
            ));
        }
        let loaders = tasks
            .into_iter()
            .enumerate()
            .map(|(i, (_, rows))| {
                Loader::new(
                    rows,
                    seed ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
                )
            })
            .collect();
        Ok(Self {
            names,
            loaders,
            phases,
            seed,
        })
    }

    /// The next `n` rows of step `step`.
    pub fn next(&mut self, step: usize, n: usize) -> Vec<&TrainRow> {
        let cum = &self
            .phases
            .iter()
            .rev()
            .find(|(from, _)| *from <= step)
            .expect("phase 0 starts at step 0")
            .1;
        let mut rng = StdRng::seed_from_u64(
            self.seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED,
        );
        let picks: Vec<(usize, usize)> = (0..n)
            .map(|_| {
                let u: f64 = rng.random();
                let t = cum.iter().position(|&c| u < c).unwrap_or(cum.len() - 1);
                (t, self.loaders[t].next_index())
            })
            .collect();
        picks
            .into_iter()
            .map(|(t, i)| &self.loaders[t].rows()[i])
            .collect()
    }

    /// (epoch, cursor) of every task, for checkpoints.
    pub fn positions(&self) -> Vec<(usize, usize)> {
        self.loaders.iter().map(|l| (l.epoch, l.cursor)).collect()
    }

    pub fn seek(&mut self, positions: &[(usize, usize)]) {
        for (l, &(e, c)) in self.loaders.iter_mut().zip(positions) {
            l.seek(e, c);
        }
    }

    pub fn rows(&self) -> usize {
        self.loaders.iter().map(|l| l.rows().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(tag: u32, n: usize) -> Vec<TrainRow> {
        (0..n)
            .map(|i| TrainRow {
                input_ids: vec![tag, i as u32],
                targets: vec![false, true],
                ..Default::default()
            })
            .collect()
    }

    fn task(name: &str, rate: Option<f64>) -> TaskSection {
        TaskSection {
            name: name.into(),
            train: "x".into(),
            eval: None,
            rate,
            preprocessors: Vec::new(),
            features: None,
        }
    }

    #[test]
    fn temperature_rates_switches_and_exact_resume() {
        // Glot500-style: sizes 900 and 100 at α = 0.3 → rates 900^0.3 : 100^0.3 ≈ 0.66 : 0.34.
        let mix = MixtureSection {
            temperature: Some(0.3),
            switch: vec![SwitchSection {
                step: 2500,
                rates: [("small".to_string(), 1.0)].into(),
            }],
        };
        let make = || {
            Mixture::new(
                vec![
                    (task("big", None), rows(1, 900)),
                    (task("small", None), rows(2, 100)),
                ],
                &mix,
                7,
            )
            .unwrap()
        };
        let mut m = make();
        let mut small = 0usize;
        // 100k draws before the switch.
        for step in 0..2500 {
            small += m
                .next(step, 40)
                .iter()
                .filter(|r| r.input_ids[0] == 2)
                .count();
        }
        let share = small as f64 / 100_000.0;
        let want = 100f64.powf(0.3) / (100f64.powf(0.3) + 900f64.powf(0.3));
        // binomial sd = sqrt(p(1-p)/n) ≈ 0.0015: within 4 sd
        assert!((share - want).abs() < 0.006, "{share} vs {want}");
        assert!(
            m.next(2500, 40).iter().all(|r| r.input_ids[0] == 2),
            "after the switch only `small`"
        );
        // Resume: a fresh mixture seeked to the saved positions draws the same rows.
        let saved = m.positions();
        let want: Vec<Vec<u32>> = m
            .next(2501, 8)
            .iter()
            .map(|r| r.input_ids.clone())
            .collect();
        let mut resumed = make();
        resumed.seek(&saved);
        let got: Vec<Vec<u32>> = resumed
            .next(2501, 8)
            .iter()
            .map(|r| r.input_ids.clone())
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn bad_mixtures_are_named() {
        let mix = MixtureSection {
            temperature: None,
            switch: vec![SwitchSection {
                step: 3,
                rates: [("nope".to_string(), 1.0)].into(),
            }],
        };
        let e = Mixture::new(vec![(task("a", Some(1.0)), rows(1, 3))], &mix, 0)
            .err()
            .unwrap();
        assert!(e.contains("nope"), "{e}");
        let e = Mixture::new(
            vec![(task("a", Some(0.0)), rows(1, 3))],
            &MixtureSection::default(),
            0,
        )
        .err()
        .unwrap();
        assert!(e.contains("data.tasks"), "{e}");
    }
}
