//! Metrics: per-document items and their aggregation over a task, with lm-eval's names
//! (`api/metrics.py`). A metric is one file here plus one line in [`aggregation`] (how items
//! combine) and, for generated text, one line in [`text_metric`] (how a prediction scores).

pub mod exact_match;
pub mod perplexity;
pub mod stderr;

use serde_json::{Map, Value};

/// One document's contribution to a metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A per-document score, averaged (`mean`).
    Score(f64),
    /// A log-likelihood and its unit count (words, bytes, tokens), for corpus perplexities.
    Weighted(f64, f64),
}

impl Item {
    /// As lm-eval writes it in the samples file.
    pub fn to_json(&self) -> Value {
        match self {
            Item::Score(x) => Value::from(*x),
            Item::Weighted(ll, n) => Value::from(vec![*ll, *n]),
        }
    }
}

/// The aggregate of `items` under `name` (lm-eval's aggregation names) and its standard error
/// (`None`: lm-eval's "N/A").
pub fn aggregation(name: &str, items: &[Item]) -> Result<(f64, Option<f64>), String> {
    let scores = || -> Result<Vec<f64>, String> {
        items
            .iter()
            .map(|i| match i {
                Item::Score(x) => Ok(*x),
                _ => Err(format!("aggregation `{name}` needs per-document scores")),
            })
            .collect()
    };
    let pairs = || -> Result<Vec<(f64, f64)>, String> {
        items
            .iter()
            .map(|i| match i {
                Item::Weighted(a, b) => Ok((*a, *b)),
                _ => Err(format!(
                    "aggregation `{name}` needs (log-likelihood, count) items"
                )),
            })
            .collect()
    };
    match name {
        "mean" => {
            let x = scores()?;
            Ok((stderr::mean(&x), stderr::mean_stderr(&x)))
        }
        "perplexity" => {
            let x = scores()?;
            Ok((perplexity::perplexity(&x), None))
        }
        "weighted_perplexity" => Ok((perplexity::weighted_perplexity(&pairs()?), None)),
        "bits_per_byte" => Ok((perplexity::bits_per_byte(&pairs()?), None)),
        other => Err(format!(
            "aggregation `{other}` is not supported (mean, perplexity, weighted_perplexity, bits_per_byte)"
        )),
    }
}

/// lm-eval's default aggregation and direction of a metric.
pub fn defaults(metric: &str) -> Option<(&'static str, bool)> {
    Some(match metric {
        "acc" | "acc_norm" | "acc_bytes" | "exact_match" => ("mean", true),
        "perplexity" => ("perplexity", false),
        "word_perplexity" | "byte_perplexity" => ("weighted_perplexity", false),
        "bits_per_byte" => ("bits_per_byte", false),
        _ => return None,
    })
}

/// Scores a generated `prediction` against the `gold` under `metric` with its YAML options.
pub fn text_metric(
    metric: &str,
    gold: &str,
    prediction: &str,
    options: &Map<String, Value>,
) -> Result<Item, String> {
    match metric {
        "exact_match" => Ok(Item::Score(exact_match::exact_match(
            gold, prediction, options,
        )?)),
        other => Err(format!(
            "metric `{other}` is not supported for generated text (exact_match)"
        )),
    }
}
