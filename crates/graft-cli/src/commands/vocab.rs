//! `graft vocab`: vocabulary adaptation. `report` measures how one or more tokenizers cut a
//! corpus (tokens per word, bytes per token, continued words, byte-fallback and unknown rates,
//! vocabulary used), the figures to compare before and after adapting a vocabulary.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use crate::io::{claim_outputs, write_atomic};

#[derive(clap::Subcommand, Debug)]
pub enum VocabCommand {
    /// Tokens per word, bytes per token, continued words, byte-fallback/unknown rates and vocabulary used, per tokenizer.
    Report(ReportArgs),
    /// Keep the tokens a corpus uses (plus specials and byte tokens), renumbered; embeddings and head sliced.
    Trim(TrimArgs),
}

#[derive(clap::Args, Debug)]
#[command(
    about = "Vocabulary adaptation: measure how tokenizers cut a corpus (report)",
    after_help = "Example:\n  graft vocab report --model SmolLM2-135M-Instruct.Q8_0.gguf --model smollm2-it --corpus it.jsonl --output report.json"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: VocabCommand,
}

#[derive(clap::Args, Debug)]
pub struct TrimArgs {
    /// HF directory or .gguf file (written as an f32 HF directory, as `graft convert` does).
    #[arg(long)]
    pub model: PathBuf,
    /// JSONL/Parquet rows with a text field, or .txt files: the tokens they use are kept.
    #[arg(long, required = true, num_args = 1..)]
    pub corpus: Vec<PathBuf>,
    #[arg(long, default_value = "text")]
    pub field: String,
    /// Keep tokens used at least this many times.
    #[arg(long, default_value_t = 1, conflicts_with = "top")]
    pub min_frequency: u64,
    /// Keep the N most used tokens instead.
    #[arg(long)]
    pub top: Option<usize>,
    /// A file of tokens to keep as well, one per line (as the vocabulary spells them).
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// The HF directory to write.
    #[arg(long)]
    pub output: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// HF directory (tokenizer files suffice) or .gguf file; repeat to compare tokenizers.
    #[arg(long, required = true)]
    pub model: Vec<PathBuf>,
    /// JSONL/Parquet rows with a text field, or .txt files (one row per line).
    #[arg(long, required = true, num_args = 1..)]
    pub corpus: Vec<PathBuf>,
    /// The rows' text field.
    #[arg(long, default_value = "text")]
    pub field: String,
    /// Also write the figures as JSON here.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    match a.command {
        VocabCommand::Report(r) => report(r),
        VocabCommand::Trim(t) => trim(t),
    }
}

/// The corpus's texts, each error naming its file and line.
fn corpus_texts(corpus: &[PathBuf], field: &str) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    for path in corpus {
        for item in graft_data::source::rows_iter(path).map_err(anyhow::Error::msg)? {
            let (line, row) = item.map_err(anyhow::Error::msg)?;
            let text = row.get(field).and_then(Value::as_str).ok_or_else(|| {
                anyhow!(
                    "{}:{line}: field `{field}`: missing or not a string",
                    path.display()
                )
            })?;
            texts.push(text.to_string());
        }
    }
    if !texts.iter().any(|t| t.split_whitespace().next().is_some()) {
        bail!("--corpus: no words in {} file(s)", corpus.len());
    }
    Ok(texts)
}

fn report(a: ReportArgs) -> Result<()> {
    if let Some(out) = &a.output {
        let inputs: Vec<&std::path::Path> = a.corpus.iter().map(PathBuf::as_path).collect();
        claim_outputs(&[out], &inputs)?;
    }
    let texts = corpus_texts(&a.corpus, &a.field)?;
    let mut reports = Vec::new();
    println!("| tokenizer | words | tokens | tokens/word | bytes/token | continued words | byte fallback | unknown | vocabulary used |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for model in &a.model {
        let tok = super::data::tokenizer(model)?;
        let mut counter = graft_models::vocab::report::Counter::new(&tok);
        let bar = crate::io::progress(texts.len() as u64, "rows");
        for t in &texts {
            counter.add(t)?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        let r = counter.finish();
        println!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.1}% | {:.2}% | {:.2}% | {} / {} |",
            model.display(),
            r.words,
            r.tokens,
            r.tokens_per_word,
            r.bytes_per_token,
            100.0 * r.split_word_share,
            100.0 * r.byte_fallback_share,
            100.0 * r.unknown_share,
            r.vocabulary_used,
            r.vocabulary_size
        );
        reports.push(json!({"model": model, "report": r}));
    }
    if let Some(out) = &a.output {
        let doc = json!({"corpus": a.corpus, "field": a.field, "tokenizers": reports});
        write_atomic(out, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    }
    Ok(())
}

fn trim(a: TrimArgs) -> Result<()> {
    use graft_models::vocab::trim;
    let mut inputs: Vec<&std::path::Path> = a.corpus.iter().map(PathBuf::as_path).collect();
    inputs.push(&a.model);
    claim_outputs(&[&a.output], &inputs)?;
    let texts = corpus_texts(&a.corpus, &a.field)?;
    let keep: Vec<String> = match &a.keep {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| anyhow!("{}: {e}", p.display()))?
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    };
    let spinner = crate::io::spinner(&format!("reading {}", a.model.display()));
    let source = graft_models::ModelSource::open(
        &a.model,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )?;
    let tok = source.tokenizer()?.clone();
    spinner.finish_and_clear();
    let mut counts = vec![0u64; tok.inner.get_vocab_size(true)];
    let bar = crate::io::progress(texts.len() as u64, "rows");
    for t in &texts {
        for id in tok.encode(t, false)? {
            if let Some(c) = counts.get_mut(id as usize) {
                *c += 1;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut ids = trim::named_ids(&source.config_json);
    ids.extend(source.generation.eos_token_ids.iter().copied());
    ids.extend(source.generation.bos_token_id);
    let rules = trim::KeepRules {
        min_frequency: a.min_frequency,
        top: a.top,
        ids: &ids,
        tokens: &keep,
    };
    let kept = trim::kept_ids(&tok, &counts, &rules)?;
    let spinner = crate::io::spinner(&format!("writing {}", a.output.display()));
    let s = trim::save_trimmed(&source, &tok, &kept, &a.output)?;
    spinner.finish_and_clear();
    println!(
        "wrote {}: vocabulary {} -> {}, parameters {} -> {} ({:.1}% fewer)",
        a.output.display(),
        s.vocabulary_before,
        s.vocabulary_after,
        s.parameters_before,
        s.parameters_after,
        100.0 * (1.0 - s.parameters_after as f64 / s.parameters_before.max(1) as f64)
    );
    Ok(())
}
