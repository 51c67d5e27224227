//! Metrics: per-document items and their aggregation over a task, with lm-eval's names
//! (`api/metrics.py`). A metric is one file here plus one line in [`aggregation`] (how items
//! combine) and, for generated text, one line in [`text_metric`] (how a prediction scores).

pub mod bleu;
pub mod chrf;
pub mod classification;
pub mod exact_match;
pub mod perplexity;
pub mod rouge;
pub mod squad;
pub mod stderr;
pub mod ter;

use serde_json::{Map, Value};

/// Python's `string.punctuation`, which the metrics' normalisations strip.
pub const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// One document's contribution to a metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A per-document score, averaged (`mean`).
    Score(f64),
    /// A log-likelihood and its unit count (words, bytes, tokens), for corpus perplexities.
    Weighted(f64, f64),
    /// References and a prediction, for corpus-level text metrics (BLEU, chrF).
    Texts(Vec<String>, String),
    /// A gold and a predicted label, for F1 over the task.
    Labels(String, String),
}

impl Item {
    /// As lm-eval writes it in the samples file.
    pub fn to_json(&self) -> Value {
        match self {
            Item::Score(x) => Value::from(*x),
            Item::Weighted(ll, n) => Value::from(vec![*ll, *n]),
            // lm-eval keeps [gold, prediction]; a list of golds stays a list.
            Item::Texts(refs, pred) if refs.len() == 1 => serde_json::json!([refs[0], pred]),
            Item::Texts(refs, pred) => serde_json::json!([refs, pred]),
            Item::Labels(g, p) => serde_json::json!([g, p]),
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
    let texts = || -> Result<Vec<(Vec<String>, String)>, String> {
        items
            .iter()
            .map(|i| match i {
                Item::Texts(r, p) => Ok((r.clone(), p.clone())),
                _ => Err(format!(
                    "aggregation `{name}` needs (references, prediction) items"
                )),
            })
            .collect()
    };
    let labels = || -> Result<Vec<(String, String)>, String> {
        items
            .iter()
            .map(|i| match i {
                Item::Labels(g, p) => Ok((g.clone(), p.clone())),
                _ => Err(format!(
                    "aggregation `{name}` needs (gold, predicted) labels"
                )),
            })
            .collect()
    };
    // lm-eval bootstraps these: 100 resamples for the text metrics, 100,000 otherwise.
    match name {
        // Segment statistics once; the resamples only re-add them.
        "bleu" => {
            let stats: Vec<bleu::Stats> = texts()?.iter().map(|(r, h)| bleu::segment(h, r)).collect();
            Ok((bleu::from_stats(&stats), stderr::bootstrap(&stats, 100, bleu::from_stats)))
        }
        "chrf" | "chrfpp" => {
            let order = if name == "chrf" { 0 } else { 2 };
            let stats: Vec<Vec<f64>> = texts()?.iter().map(|(r, h)| chrf::segment(r, h, order)).collect();
            let f = |x: &[Vec<f64>]| chrf::from_stats(x, order);
            Ok((f(&stats), stderr::bootstrap(&stats, 100, f)))
        }
        // Lower is better; bootstrapped with 100 resamples as lm-eval does for ter.
        "ter" => {
            let stats: Vec<[f64; 2]> = texts()?.iter().map(|(r, h)| ter::segment(r, h)).collect();
            Ok((ter::from_stats(&stats), stderr::bootstrap(&stats, 100, ter::from_stats)))
        }
        "f1" | "f1_macro" | "f1_micro" => {
            let l = labels()?;
            let f = match name {
                "f1" => classification::binary,
                "f1_macro" => classification::macro_f1,
                _ => classification::micro_f1,
            };
            Ok((f(&l), stderr::bootstrap(&l, 100_000, f)))
        }
        "matthews_corrcoef" => {
            let l = labels()?;
            let f = classification::matthews;
            Ok((f(&l), stderr::bootstrap(&l, 100_000, f)))
        }
        "mean" => {
            let x = scores()?;
            Ok((stderr::mean(&x), stderr::mean_stderr(&x)))
        }
        // lm-eval bootstraps perplexity's stderr too (100,000 resamples).
        "perplexity" => {
            let x = scores()?;
            Ok((perplexity::perplexity(&x), stderr::bootstrap(&x, 100_000, perplexity::perplexity)))
        }
        "weighted_perplexity" => Ok((perplexity::weighted_perplexity(&pairs()?), None)),
        "bits_per_byte" => Ok((perplexity::bits_per_byte(&pairs()?), None)),
        other => Err(format!(
            "aggregation `{other}` is not supported (mean, perplexity, weighted_perplexity, bits_per_byte, bleu, chrf, chrfpp, ter, f1, f1_macro, f1_micro, matthews_corrcoef)"
        )),
    }
}

/// lm-eval's default aggregation and direction of a metric.
pub fn defaults(metric: &str) -> Option<(&'static str, bool)> {
    Some(match metric {
        "acc" | "acc_norm" | "acc_bytes" | "exact_match" => ("mean", true),
        "rouge1" | "rouge2" | "rougeL" | "token_f1" | "squad_em" | "pass@1" => ("mean", true),
        "bleu" => ("bleu", true),
        "chrf" => ("chrf", true),
        "chrfpp" => ("chrfpp", true),
        "ter" => ("ter", false),
        "f1" => ("f1", true),
        "mcc" => ("matthews_corrcoef", true),
        "f1_macro" => ("f1_macro", true),
        "f1_micro" => ("f1_micro", true),
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
    let golds = [gold.to_string()];
    match metric {
        "exact_match" => Ok(Item::Score(exact_match::exact_match(
            gold, prediction, options,
        )?)),
        // Corpus metrics: lm-eval keeps (reference, prediction) and scores the corpus.
        "bleu" | "chrf" | "chrfpp" | "ter" => Ok(Item::Texts(golds.to_vec(), prediction.into())),
        "rouge1" => Ok(Item::Score(rouge::rouge_n(gold, prediction, 1))),
        "rouge2" => Ok(Item::Score(rouge::rouge_n(gold, prediction, 2))),
        "rougeL" => Ok(Item::Score(rouge::rouge_l(gold, prediction))),
        "token_f1" => Ok(Item::Score(squad::f1(prediction, &golds))),
        "squad_em" => Ok(Item::Score(squad::exact(prediction, &golds))),
        other => Err(format!(
            "metric `{other}` is not supported for generated text (exact_match, bleu, chrf, chrfpp, ter, rouge1, rouge2, rougeL, token_f1, squad_em, pass@1)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graft_testkit::read_json;

    fn strings(v: &Value) -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn text_metrics_match_their_reference_libraries() {
        // tests/fixtures/eval/metrics_reference.json: sacrebleu 2.6.0, rouge-score 0.1.2, the
        // SQuAD v1.1 script, scikit-learn 1.9.1, lm_eval 0.4.13 (tools/fixtures/make_eval_fixtures.py).
        let r = read_json("eval/metrics_reference.json");
        let sb = &r["sacrebleu"];
        let hyps = strings(&sb["hypotheses"]);
        let streams: Vec<Vec<String>> = sb["references"]
            .as_array()
            .unwrap()
            .iter()
            .map(strings)
            .collect();
        for (h, want) in sb["tokenize_13a"].as_object().unwrap() {
            assert_eq!(bleu::tokenize_13a(h), want.as_str().unwrap());
        }
        let items = |k: usize| -> Vec<(Vec<String>, String)> {
            hyps.iter()
                .enumerate()
                .map(|(i, h)| {
                    (
                        streams[..k].iter().map(|s| s[i].clone()).collect(),
                        h.clone(),
                    )
                })
                .collect()
        };
        let close = |a: f64, b: &Value| (a - b.as_f64().unwrap()).abs() < 1e-9 * (1.0 + a.abs());
        assert!(close(
            bleu::corpus_bleu(&items(1)),
            &sb["corpus_bleu_1ref"]["score"]
        ));
        assert!(close(
            bleu::corpus_bleu(&items(2)),
            &sb["corpus_bleu_2ref"]["score"]
        ));
        assert!(close(
            chrf::corpus_chrf(&items(1), 0),
            &sb["corpus_chrf_1ref"]
        ));
        assert!(close(
            chrf::corpus_chrf(&items(2), 0),
            &sb["corpus_chrf_2ref"]
        ));
        assert!(close(
            chrf::corpus_chrf(&items(1), 2),
            &sb["corpus_chrfpp_1ref"]
        ));
        assert!(close(
            chrf::corpus_chrf(&items(2), 2),
            &sb["corpus_chrfpp_2ref"]
        ));
        assert!(close(ter::corpus_ter(&items(1)), &sb["corpus_ter_1ref"]));
        assert!(close(ter::corpus_ter(&items(2)), &sb["corpus_ter_2ref"]));
        // lm-eval's bootstrap standard errors (100 resamples, random.Random(0).choices).
        let st = &r["stderr"];
        let one: Vec<Item> = items(1)
            .into_iter()
            .map(|(r, p)| Item::Texts(r, p))
            .collect();
        assert!(close(
            aggregation("bleu", &one).unwrap().1.unwrap(),
            &st["bleu_1ref_bootstrap_100"]
        ));
        assert!(close(
            aggregation("chrf", &one).unwrap().1.unwrap(),
            &st["chrf_1ref_bootstrap_100"]
        ));
        for pair in r["rouge_score"]["pairs"].as_array().unwrap() {
            let (t, p) = (
                pair["target"].as_str().unwrap(),
                pair["prediction"].as_str().unwrap(),
            );
            let w = &pair["no_stemmer"];
            assert!(
                close(rouge::rouge_n(t, p, 1), &w["rouge1"]["fmeasure"]),
                "{pair}"
            );
            assert!(
                close(rouge::rouge_n(t, p, 2), &w["rouge2"]["fmeasure"]),
                "{pair}"
            );
            assert!(
                close(rouge::rouge_l(t, p), &w["rougeL"]["fmeasure"]),
                "{pair}"
            );
        }
        for case in r["squad_v1"]["cases"].as_array().unwrap() {
            let (p, golds) = (
                case["prediction"].as_str().unwrap(),
                strings(&case["golds"]),
            );
            assert_eq!(
                squad::normalize_answer(p),
                case["normalized_prediction"].as_str().unwrap()
            );
            assert_eq!(
                squad::exact(p, &golds),
                case["em"].as_f64().unwrap(),
                "{case}"
            );
            assert!(close(squad::f1(p, &golds), &case["f1"]), "{case}");
        }
        let sk = &r["sklearn"];
        let lab = |t: &Value, p: &Value| -> Vec<(String, String)> {
            t.as_array()
                .unwrap()
                .iter()
                .zip(p.as_array().unwrap())
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let multi = lab(&sk["y_true"], &sk["y_pred"]);
        assert!(close(classification::macro_f1(&multi), &sk["f1_macro"]));
        assert!(close(classification::micro_f1(&multi), &sk["f1_micro"]));
        let bin = lab(&sk["binary"]["y_true"], &sk["binary"]["y_pred"]);
        assert!(close(
            classification::binary(&bin),
            &sk["binary"]["lm_eval_f1_agg"]
        ));
    }
}
