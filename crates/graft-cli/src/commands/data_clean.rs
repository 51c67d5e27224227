//! `graft data dedup` and `graft data decontaminate`: write the kept rows (JSONL, as read) and a
//! report row for every dropped one naming its line and why.

use std::path::PathBuf;

use anyhow::Result;
use graft_data::decontaminate::{content_text, row_text, train_units, EvalIndex};
use graft_data::dedup::{find_duplicates, Duplicate, MinHashConfig};
use graft_data::quality::QualityFilter;
use serde_json::{json, Map, Value};

use crate::io::{progress, write_atomic};

#[derive(clap::Args, Debug)]
pub struct DedupArgs {
    #[arg(long)]
    pub input: PathBuf,
    /// The kept rows (JSONL).
    #[arg(long)]
    pub output: PathBuf,
    /// One JSON line per dropped row: its line, the reason, the row it duplicates.
    #[arg(long)]
    pub report: PathBuf,
    /// Also drop near duplicates (MinHash + LSH over word n-grams).
    #[arg(long)]
    pub near: bool,
    #[arg(long, default_value_t = 0.8)]
    pub threshold: f64,
    #[arg(long, default_value_t = 5)]
    pub ngram: usize,
    #[arg(long, default_value_t = 128)]
    pub num_perm: usize,
    /// Quality filters (off unless given).
    #[arg(long)]
    pub min_words: Option<usize>,
    #[arg(long)]
    pub max_words: Option<usize>,
    #[arg(long)]
    pub max_symbol_ratio: Option<f64>,
    #[arg(long)]
    pub max_dup_line_fraction: Option<f64>,
    #[arg(long)]
    pub max_top_trigram_fraction: Option<f64>,
}

#[derive(clap::Args, Debug)]
pub struct DecontaminateArgs {
    /// Training rows (JSONL, Parquet, .txt).
    #[arg(long)]
    pub input: PathBuf,
    /// Eval sets (repeatable); every string of an eval row is its text.
    #[arg(long = "eval", required = true)]
    pub evals: Vec<PathBuf>,
    #[arg(long)]
    pub output: PathBuf,
    #[arg(long)]
    pub report: PathBuf,
    #[arg(long, default_value_t = 8)]
    pub ngram: usize,
    /// A row is contaminated when more than this share of an eval instance's tokens is matched.
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
}

fn jsonl(rows: impl Iterator<Item = Value>) -> String {
    rows.map(|r| r.to_string() + "\n").collect()
}

pub fn dedup(a: DedupArgs, skip: bool) -> Result<()> {
    check_counts(
        &[("--ngram", a.ngram), ("--num-perm", a.num_perm)],
        a.threshold,
    )?;
    crate::io::claim_outputs(&[&a.output, &a.report], &[&a.input])?;
    let rows = super::data::read(&a.input, skip)?;
    let texts: Vec<String> = rows
        .iter()
        .map(|(_, r)| content_text(&Value::Object(r.clone())))
        .collect();
    let filters = [a.min_words, a.max_words].iter().any(Option::is_some)
        || [
            a.max_symbol_ratio,
            a.max_dup_line_fraction,
            a.max_top_trigram_fraction,
        ]
        .iter()
        .any(Option::is_some);
    let mut q = QualityFilter::default();
    if filters {
        q.min_words = a.min_words.unwrap_or(0);
        q.max_words = a.max_words.unwrap_or(usize::MAX);
        q.max_symbol_ratio = a.max_symbol_ratio.unwrap_or(f64::INFINITY);
        q.max_dup_line_fraction = a.max_dup_line_fraction.unwrap_or(f64::INFINITY);
        q.max_top_trigram_fraction = a.max_top_trigram_fraction.unwrap_or(f64::INFINITY);
    }
    let cfg = MinHashConfig {
        num_perm: a.num_perm,
        ngram: a.ngram,
        threshold: a.threshold,
        seed: 1,
    };
    let spinner = crate::io::spinner("finding duplicates");
    let dups = find_duplicates(&texts, a.near.then_some(&cfg));
    spinner.finish_and_clear();
    let (mut kept, mut report) = (Vec::new(), Vec::new());
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for (i, ((line, row), dup)) in rows.iter().zip(&dups).enumerate() {
        let quality = if filters { q.check(&texts[i]) } else { None };
        let reason = match (dup, quality) {
            (Some(Duplicate::Exact { of }), _) => {
                Some(("exact_duplicate", json!({"of_line": rows[*of].0})))
            }
            (Some(Duplicate::Near { of, jaccard }), _) => Some((
                "near_duplicate",
                json!({"of_line": rows[*of].0, "estimated_jaccard": jaccard}),
            )),
            (None, Some(why)) => Some(("quality", json!({"rule": why}))),
            (None, None) => None,
        };
        match reason {
            None => kept.push(Value::Object(row.clone())),
            Some((kind, mut detail)) => {
                *counts.entry(kind).or_default() += 1;
                detail["line"] = json!(line);
                detail["reason"] = json!(kind);
                report.push(detail);
            }
        }
    }
    write_atomic(&a.output, jsonl(kept.iter().cloned()).as_bytes())?;
    write_atomic(&a.report, jsonl(report.into_iter()).as_bytes())?;
    println!(
        "{}",
        json!({"rows": rows.len(), "kept": kept.len(), "dropped": counts})
    );
    Ok(())
}

/// Counts ≥ 1 and a threshold in [0, 1], before any file is read.
fn check_counts(counts: &[(&str, usize)], threshold: f64) -> Result<()> {
    if let Some((flag, _)) = counts.iter().find(|(_, n)| *n == 0) {
        anyhow::bail!("{flag}: must be ≥ 1");
    }
    if !(0.0..=1.0).contains(&threshold) {
        anyhow::bail!("--threshold: must be in [0, 1], got {threshold}");
    }
    Ok(())
}

pub fn decontaminate(a: DecontaminateArgs, skip: bool) -> Result<()> {
    check_counts(&[("--ngram", a.ngram)], a.threshold)?;
    let mut inputs: Vec<&std::path::Path> = a.evals.iter().map(PathBuf::as_path).collect();
    inputs.push(&a.input);
    crate::io::claim_outputs(&[&a.output, &a.report], &inputs)?;
    let mut evals: Vec<(String, usize, Map<String, Value>)> = Vec::new();
    for path in &a.evals {
        for (line, row) in super::data::read(path, skip)? {
            evals.push((path.display().to_string(), line, row));
        }
    }
    let texts: Vec<String> = evals
        .iter()
        .map(|(_, _, r)| row_text(&Value::Object(r.clone())))
        .collect();
    let index = EvalIndex::new(&texts, a.ngram);
    let rows = super::data::read(&a.input, skip)?;
    let bar = progress(rows.len() as u64, "rows");
    let (mut kept, mut report) = (Vec::new(), Vec::new());
    for (line, row) in &rows {
        let row_v = Value::Object(row.clone());
        let overlaps = index.overlaps(&train_units(&row_v), a.threshold);
        match overlaps.first() {
            None => kept.push(row_v),
            Some(o) => {
                let (file, eval_line, eval_row) = &evals[o.eval];
                report.push(json!({"line": line, "overlap": o.ratio, "eval_file": file, "eval_line": eval_line,
                    "eval_row": eval_row, "matches": overlaps.len(), "row": row}));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let removed = report.len();
    write_atomic(&a.output, jsonl(kept.iter().cloned()).as_bytes())?;
    write_atomic(&a.report, jsonl(report.into_iter()).as_bytes())?;
    println!(
        "{}",
        json!({"rows": rows.len(), "kept": kept.len(), "removed": removed, "eval_instances": evals.len(),
        "ngram": a.ngram, "threshold": a.threshold})
    );
    Ok(())
}
