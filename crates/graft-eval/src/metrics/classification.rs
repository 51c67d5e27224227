//! Classification F1 over (gold, predicted) label pairs, as scikit-learn's `f1_score`: `binary`
//! (positive label "1", lm-eval's `f1` aggregation), `macro` (the unweighted mean of per-label F1
//! over every label seen in either list) and `micro` (from pooled counts — accuracy for
//! single-label data).

use std::collections::BTreeSet;

fn counts(pairs: &[(String, String)], label: &str) -> (f64, f64, f64) {
    let mut tp = 0.0;
    let mut fp = 0.0;
    let mut fneg = 0.0;
    for (g, p) in pairs {
        match (g == label, p == label) {
            (true, true) => tp += 1.0,
            (false, true) => fp += 1.0,
            (true, false) => fneg += 1.0,
            _ => {}
        }
    }
    (tp, fp, fneg)
}

fn f1((tp, fp, fneg): (f64, f64, f64)) -> f64 {
    if tp == 0.0 {
        0.0
    } else {
        2.0 * tp / (2.0 * tp + fp + fneg)
    }
}

pub fn binary(pairs: &[(String, String)]) -> f64 {
    f1(counts(pairs, "1"))
}

pub fn macro_f1(pairs: &[(String, String)]) -> f64 {
    let labels: BTreeSet<&String> = pairs.iter().flat_map(|(g, p)| [g, p]).collect();
    labels.iter().map(|l| f1(counts(pairs, l))).sum::<f64>() / labels.len().max(1) as f64
}

pub fn micro_f1(pairs: &[(String, String)]) -> f64 {
    let labels: BTreeSet<&String> = pairs.iter().flat_map(|(g, p)| [g, p]).collect();
    let (tp, fp, fneg) = labels
        .iter()
        .map(|l| counts(pairs, l))
        .fold((0.0, 0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
    f1((tp, fp, fneg))
}
/// scikit-learn's `matthews_corrcoef` (multiclass form, lm-eval's `mcc` aggregation): 0 when
/// either side has a single label.
pub fn matthews(pairs: &[(String, String)]) -> f64 {
    let labels: BTreeSet<&String> = pairs.iter().flat_map(|(g, p)| [g, p]).collect();
    let n = pairs.len() as f64;
    let correct = pairs.iter().filter(|(g, p)| g == p).count() as f64;
    let (mut tp, mut tt, mut pp) = (0.0, 0.0, 0.0);
    for l in &labels {
        let t = pairs.iter().filter(|(g, _)| g == *l).count() as f64;
        let p = pairs.iter().filter(|(_, q)| q == *l).count() as f64;
        tp += t * p;
        tt += t * t;
        pp += p * p;
    }
    let (cov_tp, cov_pp, cov_tt) = (correct * n - tp, n * n - pp, n * n - tt);
    if cov_pp * cov_tt == 0.0 {
        0.0
    } else {
        cov_tp / (cov_tt * cov_pp).sqrt()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn matthews_equals_scikit_learn() {
        // sklearn 1.9.1 matthews_corrcoef on the same labels.
        let cases: [(&[u8], &[u8], f64); 4] = [
            (&[0, 1, 2, 0, 1, 2, 0], &[0, 2, 1, 0, 1, 2, 1], 0.375),
            (&[1, 1, 0, 0, 1], &[1, 0, 0, 0, 1], 0.6666666666666666),
            (&[0, 0, 0], &[0, 1, 0], 0.0),
            (&[1, 1], &[1, 1], 0.0),
        ];
        for (g, p, want) in cases {
            let pairs: Vec<(String, String)> = g
                .iter()
                .zip(p)
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            assert!(
                (super::matthews(&pairs) - want).abs() < 1e-15,
                "{g:?} {p:?}"
            );
        }
    }
}
