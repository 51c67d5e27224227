//! SQuAD v1.1's official answer metrics (Rajpurkar et al. 2016, `evaluate-v1.1.py`): answers
//! normalised — lower-cased, ASCII punctuation removed, articles (a, an, the) removed, whitespace
//! collapsed — then exact match, and token F1 from the multiset overlap; each the maximum over
//! the gold answers.

use std::collections::HashMap;
use std::sync::LazyLock;

use super::PUNCTUATION;

static ARTICLES: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"\b(a|an|the)\b").expect("compiles"));

pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punc: String = lower
        .chars()
        .filter(|c| !PUNCTUATION.contains(*c))
        .collect();
    let no_articles = ARTICLES.replace_all(&no_punc, " ");
    no_articles.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn exact(prediction: &str, golds: &[String]) -> f64 {
    let p = normalize_answer(prediction);
    golds.iter().any(|g| normalize_answer(g) == p) as u8 as f64
}

fn f1_one(prediction: &str, gold: &str) -> f64 {
    let (p, g) = (normalize_answer(prediction), normalize_answer(gold));
    let (pt, gt): (Vec<&str>, Vec<&str>) = (
        p.split_whitespace().collect(),
        g.split_whitespace().collect(),
    );
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in &gt {
        *counts.entry(t).or_insert(0) += 1;
    }
    let mut same = 0;
    for t in &pt {
        if let Some(c) = counts.get_mut(t) {
            if *c > 0 {
                *c -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let (prec, rec) = (same as f64 / pt.len() as f64, same as f64 / gt.len() as f64);
    2.0 * prec * rec / (prec + rec)
}

pub fn f1(prediction: &str, golds: &[String]) -> f64 {
    golds
        .iter()
        .map(|g| f1_one(prediction, g))
        .fold(0.0, f64::max)
}
