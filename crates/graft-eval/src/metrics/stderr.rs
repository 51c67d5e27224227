//! Means and their standard errors as lm-eval computes them (`api/metrics.py`: `mean`,
//! `sample_stddev` with Bessel's n − 1, `mean_stderr` = stddev / √n).

pub fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        return f64::NAN;
    }
    x.iter().sum::<f64>() / x.len() as f64
}

pub fn sample_stddev(x: &[f64]) -> f64 {
    let m = mean(x);
    (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() as f64 - 1.0)).sqrt()
}

/// `None` (lm-eval's "N/A") for fewer than two items.
pub fn mean_stderr(x: &[f64]) -> Option<f64> {
    (x.len() > 1).then(|| sample_stddev(x) / (x.len() as f64).sqrt())
}

/// lm-eval's `bootstrap_stderr`: `iters` resamples (with replacement, n of n) in chunks of
/// min(1000, iters), chunk i drawn by `random.Random(i).choices`; the sample standard deviation
/// of the metric over the resamples. `None` for fewer than two items.
pub fn bootstrap<T: Clone>(items: &[T], iters: usize, f: impl Fn(&[T]) -> f64) -> Option<f64> {
    if items.len() < 2 {
        return None;
    }
    let chunk = iters.min(1000);
    let mut reps = Vec::with_capacity(iters);
    for i in 0..iters / chunk {
        let mut rng = crate::pyrandom::PyRandom::new(i as u64);
        for _ in 0..chunk {
            let pick: Vec<T> = rng
                .choices(items.len(), items.len())
                .into_iter()
                .map(|j| items[j].clone())
                .collect();
            reps.push(f(&pick));
        }
    }
    Some(sample_stddev(&reps))
}

#[cfg(test)]
mod tests {
    #[test]
    fn mean_stderr_matches_lm_eval() {
        // tests/fixtures/eval/metrics_reference.json "stderr" (lm_eval 0.4.13 mean_stderr).
        let acc = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0];
        assert_eq!(super::mean(&acc), 0.5);
        let s = super::mean_stderr(&acc).unwrap();
        assert!((s - 0.1889822365046136).abs() < 1e-15, "{s}");
        assert_eq!(super::mean_stderr(&[1.0]), None);
    }
}
