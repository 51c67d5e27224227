//! ROUGE-1, ROUGE-2 and ROUGE-L F-measures as Google's `rouge-score` computes them without
//! stemming (Lin 2004): text lower-cased, every character outside [a-z0-9] a space, tokens split
//! on whitespace; ROUGE-N from clipped n-gram overlaps, ROUGE-L from the longest common
//! subsequence; F = 2PR / (P + R).

use std::collections::HashMap;

pub fn tokens(s: &str) -> Vec<String> {
    let lower = s.to_lowercase();
    let cleaned: String = lower
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                ' '
            }
        })
        .collect();
    cleaned.split_whitespace().map(str::to_string).collect()
}

fn f(p: f64, r: f64) -> f64 {
    if p + r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    }
}

fn grams(t: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut m: HashMap<&[String], usize> = HashMap::new();
    for w in t.windows(n) {
        *m.entry(w).or_insert(0) += 1;
    }
    m
}

/// ROUGE-N F-measure of `prediction` against `target`.
pub fn rouge_n(target: &str, prediction: &str, n: usize) -> f64 {
    let (t, p) = (tokens(target), tokens(prediction));
    let (tg, pg) = (grams(&t, n), grams(&p, n));
    let overlap: usize = pg
        .iter()
        .map(|(g, c)| (*c).min(tg.get(g).copied().unwrap_or(0)))
        .sum();
    let (pt, tt) = (pg.values().sum::<usize>(), tg.values().sum::<usize>());
    let p = if pt > 0 {
        overlap as f64 / pt as f64
    } else {
        0.0
    };
    let r = if tt > 0 {
        overlap as f64 / tt as f64
    } else {
        0.0
    };
    f(p, r)
}

/// ROUGE-L F-measure.
pub fn rouge_l(target: &str, prediction: &str) -> f64 {
    let (t, p) = (tokens(target), tokens(prediction));
    if t.is_empty() || p.is_empty() {
        return 0.0;
    }
    let mut dp = vec![vec![0usize; p.len() + 1]; t.len() + 1];
    for i in 1..=t.len() {
        for j in 1..=p.len() {
            dp[i][j] = if t[i - 1] == p[j - 1] {
                dp[i - 1][j - 1] + 1
            } else {
                dp[i - 1][j].max(dp[i][j - 1])
            };
        }
    }
    let lcs = dp[t.len()][p.len()] as f64;
    f(lcs / p.len() as f64, lcs / t.len() as f64)
}
