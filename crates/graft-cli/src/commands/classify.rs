//! `graft classify`: classification as generation. Each row's input is scored against every label
//! string (its log-likelihood as the target of an encoder-decoder model, or as the continuation of
//! the input for a decoder-only model, tokenized as lm-eval does: continuation = tokens of
//! input+label after those of input); the most likely label is the prediction. With gold labels,
//! prints accuracy and macro-F1.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use serde_json::{json, Value};

use crate::io::{progress, write_atomic, ModelArgs};
use graft_models::Model;

#[derive(clap::Args, Debug)]
#[command(
    about = "Classify rows by scoring each label string (classification as generation); accuracy and macro-F1",
    after_help = "Rows: {\"inputs\": …, \"targets\": gold label (optional)}.\n\
Example:\n  graft classify --model runs/t5-novels/final --input data/seq2seq/austen_novels.eval.jsonl \\\n    --labels \"Sense and Sensibility,Pride and Prejudice,Emma,Persuasion\" --output preds.jsonl"
)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long)]
    pub input: PathBuf,
    /// The labels, comma-separated. Each is scored as written, or as its verbalizer with
    /// `label=verbalizer` (prompt-learning style: "positive=great,negative=terrible"). For a
    /// decoder-only model give the scored string its leading space, e.g. " yes".
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Per-row predictions (JSONL); the summary goes to stdout.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

fn macro_f1(labels: &[String], gold: &[usize], pred: &[usize]) -> f64 {
    let f1s: Vec<f64> = (0..labels.len())
        .filter(|&c| gold.contains(&c) || pred.contains(&c))
        .map(|c| {
            let tp = gold
                .iter()
                .zip(pred)
                .filter(|(g, p)| **g == c && **p == c)
                .count() as f64;
            let fp = gold
                .iter()
                .zip(pred)
                .filter(|(g, p)| **g != c && **p == c)
                .count() as f64;
            let fn_ = gold
                .iter()
                .zip(pred)
                .filter(|(g, p)| **g == c && **p != c)
                .count() as f64;
            if tp == 0.0 {
                0.0
            } else {
                2.0 * tp / (2.0 * tp + fp + fn_)
            }
        })
        .collect();
    f1s.iter().sum::<f64>() / f1s.len().max(1) as f64
}

pub fn run(args: Args) -> Result<()> {
    crate::io::claim_outputs(
        &args.output.iter().map(|p| p.as_path()).collect::<Vec<_>>(),
        &[&args.input],
    )?;
    if args.labels.len() < 2 {
        bail!("--labels: give at least two labels, comma-separated");
    }
    // (label, the string scored for it)
    let (labels, verbalizers): (Vec<String>, Vec<String>) = args
        .labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((name, verbal)) => (name.to_string(), verbal.to_string()),
            None => (l.clone(), l.clone()),
        })
        .unzip();
    let rows = graft_data::source::read_rows(&args.input).map_err(anyhow::Error::msg)?;
    let (source, model, device) = args.model.load_any()?;
    let tok = source.tokenizer()?;
    let mut inputs = Vec::new();
    let mut gold: Vec<Option<usize>> = Vec::new();
    for (line, row) in &rows {
        let at = || format!("{}:{line}", args.input.display());
        let input = row
            .get("inputs")
            .and_then(Value::as_str)
            .with_context(|| format!("{}: field `inputs`: missing or not a string", at()))?;
        inputs.push(input.to_string());
        gold.push(match row.get("targets") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let g = v
                    .as_str()
                    .with_context(|| format!("{}: field `targets`: not a string", at()))?;
                Some(labels.iter().position(|l| l == g).with_context(|| {
                    format!("{}: field `targets`: `{g}` is not one of --labels", at())
                })?)
            }
        });
    }
    let n_labels = labels.len();
    let bar = progress((inputs.len() * n_labels) as u64, "scores");
    let scores: Vec<f64> = match &model {
        Model::Seq2Seq(m) => {
            let mut pairs = Vec::new();
            for input in &inputs {
                let ids = tok.encode(input, true)?;
                for label in &verbalizers {
                    pairs.push((ids.clone(), tok.encode(label, true)?));
                }
            }
            graft_models::score::score_seq2seq(m, &pairs, &Device::Cpu, |_| bar.inc(1))?
                .iter()
                .map(|lp| lp.iter().map(|&x| x as f64).sum())
                .collect()
        }
        Model::Decoder(m) => {
            let (mut seqs, mut starts) = (Vec::new(), Vec::new());
            for input in &inputs {
                let context = tok.encode(input, true)?;
                if context.is_empty() {
                    bail!("input `{input}` has no tokens");
                }
                for label in &verbalizers {
                    let full = tok.encode(&format!("{input}{label}"), true)?;
                    if full.len() <= context.len() || full[..context.len()] != context[..] {
                        bail!("label `{label}` does not tokenize as a continuation of the input `{input}`");
                    }
                    starts.push(context.len());
                    seqs.push(full);
                }
            }
            let scored = graft_models::score::score_rows(m, &seqs, &device, |_| bar.inc(1))?;
            // scored[i][j] = log p(ids[j+1] | ..): the continuation starts at position start-1.
            scored
                .iter()
                .zip(&starts)
                .map(|(lp, &s)| lp[s - 1..].iter().map(|&x| x as f64).sum())
                .collect()
        }
    };
    bar.finish_and_clear();
    let mut out = String::new();
    let mut preds = Vec::new();
    for (i, row_scores) in scores.chunks(n_labels).enumerate() {
        let best = (0..n_labels).fold(0, |b, j| if row_scores[j] > row_scores[b] { j } else { b });
        preds.push(best);
        let line = json!({"inputs": inputs[i], "prediction": labels[best], "scores": row_scores,
                          "gold": gold[i].map(|g| labels[g].clone())});
        out.push_str(&line.to_string());
        out.push('\n');
    }
    if let Some(path) = &args.output {
        write_atomic(path, out.as_bytes())?;
    }
    let labelled: Vec<(usize, usize)> = gold
        .iter()
        .zip(&preds)
        .filter_map(|(g, p)| g.map(|g| (g, *p)))
        .collect();
    let mut summary = json!({"rows": preds.len(), "labelled": labelled.len()});
    if !labelled.is_empty() {
        let (g, p): (Vec<usize>, Vec<usize>) = labelled.iter().copied().unzip();
        let acc = labelled.iter().filter(|(g, p)| g == p).count() as f64 / labelled.len() as f64;
        summary["accuracy"] = json!(acc);
        summary["macro_f1"] = json!(macro_f1(&labels, &g, &p));
    }
    println!("{summary}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn macro_f1_averages_per_class_f1_over_seen_classes() {
        // sklearn.metrics.f1_score([0,0,1,1,2], [0,1,1,1,0], average="macro") = (0.5 + 0.8 + 0) / 3
        let labels: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let f1 = super::macro_f1(&labels, &[0, 0, 1, 1, 2], &[0, 1, 1, 1, 0]);
        assert!((f1 - 1.3 / 3.0).abs() < 1e-12, "{f1}");
    }
}
