//! chrF and chrF++ as sacrebleu 2.x computes them (Popović 2015, 2017) with its defaults:
//! character n-grams up to 6 with whitespace removed (+ word n-grams up to 2 for chrF++, words
//! split from a leading or trailing punctuation mark), β = 2; per segment the reference with the
//! best F-score; corpus statistics summed; precision and recall averaged over the orders that
//! occur (sacrebleu's effective-order averaging). Scores are in [0, 100].

use std::collections::HashMap;

use super::PUNCTUATION;

fn char_ngrams(s: &str, n: usize) -> HashMap<String, usize> {
    let chars: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
    let mut m = HashMap::new();
    for w in chars.windows(n) {
        *m.entry(w.iter().collect()).or_insert(0) += 1;
    }
    m
}

fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    for w in s.split_whitespace() {
        let chars: Vec<char> = w.chars().collect();
        if chars.len() == 1 {
            out.push(w.to_string());
        } else if PUNCTUATION.contains(chars[chars.len() - 1]) {
            out.push(chars[..chars.len() - 1].iter().collect());
            out.push(chars[chars.len() - 1].to_string());
        } else if PUNCTUATION.contains(chars[0]) {
            out.push(chars[0].to_string());
            out.push(chars[1..].iter().collect());
        } else {
            out.push(w.to_string());
        }
    }
    out
}

fn word_ngrams(w: &[String], n: usize) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for g in w.windows(n) {
        *m.entry(g.join(" ")).or_insert(0) += 1;
    }
    m
}

fn all_ngrams(s: &str, word_order: usize) -> Vec<HashMap<String, usize>> {
    let mut v: Vec<_> = (1..=6).map(|n| char_ngrams(s, n)).collect();
    let w = words(s);
    v.extend((1..=word_order).map(|n| word_ngrams(&w, n)));
    v
}

fn f_score(stats: &[f64]) -> f64 {
    let (eps, factor) = (1e-16, 4.0);
    let (mut p_sum, mut r_sum, mut eff) = (0.0, 0.0, 0);
    for s in stats.chunks(3) {
        let (h, r, m) = (s[0], s[1], s[2]);
        let prec = if h > 0.0 { m / h } else { eps };
        let rec = if r > 0.0 { m / r } else { eps };
        if h > 0.0 && r > 0.0 {
            p_sum += prec;
            r_sum += rec;
            eff += 1;
        }
    }
    let (p, r) = if eff == 0 {
        (0.0, 0.0)
    } else {
        (p_sum / eff as f64, r_sum / eff as f64)
    };
    if p + r > 0.0 {
        100.0 * (1.0 + factor) * p * r / (factor * p + r)
    } else {
        0.0
    }
}

/// One segment's [hyp, ref, match] counts per order, for the reference with the best F-score.
pub fn segment(refs: &[String], hyp: &str, word_order: usize) -> Vec<f64> {
    let h = all_ngrams(hyp, word_order);
    let mut best: (f64, Vec<f64>) = (-1.0, Vec::new());
    for r in refs {
        let rg = all_ngrams(r, word_order);
        let mut stats = Vec::with_capacity(3 * h.len());
        for (hn, rn) in h.iter().zip(&rg) {
            let matches: usize = hn
                .iter()
                .map(|(g, c)| (*c).min(rn.get(g).copied().unwrap_or(0)))
                .sum();
            stats.extend([
                hn.values().sum::<usize>() as f64,
                rn.values().sum::<usize>() as f64,
                matches as f64,
            ]);
        }
        let f = f_score(&stats);
        if f > best.0 {
            best = (f, stats);
        }
    }
    best.1
}

/// Corpus chrF from segments' statistics (summed).
pub fn from_stats(stats: &[Vec<f64>], word_order: usize) -> f64 {
    let mut total = vec![0.0; 3 * (6 + word_order)];
    for s in stats {
        for (t, v) in total.iter_mut().zip(s) {
            *t += v;
        }
    }
    f_score(&total)
}

/// Corpus chrF (`word_order` 0) or chrF++ (2) of (references, hypothesis) pairs.
pub fn corpus_chrf(items: &[(Vec<String>, String)], word_order: usize) -> f64 {
    let stats: Vec<Vec<f64>> = items
        .iter()
        .map(|(r, h)| segment(r, h, word_order))
        .collect();
    from_stats(&stats, word_order)
}
