//! Learning-rate schedules with linear warmup: `constant`, `linear` (decay to 0), `cosine` (to 0, as
//! transformers' `get_cosine_schedule_with_warmup`), and `wsd` — warmup, stable, then a final
//! annealing phase decaying linearly to 0 over `decay_fraction` of the steps (OLMo 2's mid-training
//! anneal).

#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    Constant,
    Linear,
    Cosine,
    Wsd { decay_fraction: f64 },
}

impl Schedule {
    pub fn parse(name: &str, decay_fraction: f64) -> Result<Self, String> {
        match name {
            "constant" => Ok(Self::Constant),
            "linear" => Ok(Self::Linear),
            "cosine" => Ok(Self::Cosine),
            "wsd" if (0.0..=1.0).contains(&decay_fraction) => Ok(Self::Wsd { decay_fraction }),
            "wsd" => Err(format!(
                "decay_fraction must be in [0, 1], got {decay_fraction}"
            )),
            other => Err(format!(
                "schedule `{other}` is not known (constant, linear, cosine, wsd)"
            )),
        }
    }

    /// The learning rate of update `step` (0-based) out of `total`.
    pub fn lr(&self, base: f64, step: usize, total: usize, warmup: usize) -> f64 {
        if step < warmup {
            return base * step as f64 / warmup.max(1) as f64;
        }
        let span = total.saturating_sub(warmup).max(1) as f64;
        let progress = ((step - warmup) as f64 / span).min(1.0);
        match self {
            Self::Constant => base,
            Self::Linear => base * (1.0 - progress),
            Self::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            Self::Wsd { decay_fraction } => {
                let decay_steps = (total as f64 * decay_fraction).round();
                let decay_start = total as f64 - decay_steps;
                if (step as f64) < decay_start || decay_steps == 0.0 {
                    base
                } else {
                    base * (total as f64 - step as f64) / decay_steps
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_shapes() {
        let (base, total, warm) = (1.0, 110, 10);
        for s in [
            Schedule::Constant,
            Schedule::Linear,
            Schedule::Cosine,
            Schedule::Wsd {
                decay_fraction: 0.2,
            },
        ] {
            assert_eq!(s.lr(base, 0, total, warm), 0.0);
            assert!((s.lr(base, 5, total, warm) - 0.5).abs() < 1e-12);
            assert!(
                (s.lr(base, 10, total, warm) - 1.0).abs() < 1e-12,
                "{s:?} peaks after warmup"
            );
        }
        // transformers: cosine at the middle of the decay is half the peak.
        assert!((Schedule::Cosine.lr(base, 60, total, warm) - 0.5).abs() < 1e-12);
        assert!((Schedule::Linear.lr(base, 60, total, warm) - 0.5).abs() < 1e-12);
        let wsd = Schedule::Wsd {
            decay_fraction: 0.2,
        };
        assert_eq!(
            wsd.lr(base, 87, total, warm),
            1.0,
            "stable until the last 22 steps"
        );
        assert!((wsd.lr(base, 99, total, warm) - 0.5).abs() < 1e-12);
        assert!(Schedule::parse("exp", 0.1).is_err());
    }
}
