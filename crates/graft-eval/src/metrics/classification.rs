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
