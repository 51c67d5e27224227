//! `graft vocab`: vocabulary adaptation. `report` measures how one or more tokenizers cut a
//! corpus (tokens per word, bytes per token, continued words, byte-fallback and unknown rates,
//! vocabulary used), the figures to compare before and after adapting a vocabulary; `trim`
//! keeps the tokens a corpus needs and slices the embeddings and head to match.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use crate::io::{claim_outputs, write_atomic};

#[derive(clap::Subcommand, Debug)]
pub enum VocabCommand {
    /// Tokens per word, bytes per token, continued words, byte-fallback/unknown rates and vocabulary used, per tokenizer.
    Report(ReportArgs),
    /// Keep the tokens a corpus uses (plus specials and byte tokens), renumbered; embeddings and head sliced.
    Trim(super::vocab_edit::TrimArgs),
    /// Train a BPE or Unigram tokenizer on a corpus, in a model's pipeline (--like) or a default one.
    Train(super::vocab_train::TrainArgs),
    /// Give a model another tokenizer: shared tokens keep their rows, the others by FVT or OMP.
    Transplant(super::vocab_transplant::TransplantArgs),
    /// Add BPE merges (learned on a corpus, or building listed tokens) after the old ones; new rows by FVT, the mean or a fitted normal.
    Extend(super::vocab_edit::ExtendArgs),
}

#[derive(clap::Args, Debug)]
#[command(
    about = "Vocabulary adaptation: measure how tokenizers cut a corpus (report), train a tokenizer (train), trim a vocabulary to a corpus (trim), extend one with merges learned on a corpus (extend), give a model another tokenizer (transplant)",
    after_help = "Examples:\n  graft vocab report --model SmolLM2-135M-Instruct.Q8_0.gguf --model smollm2-it --corpus it.jsonl --output report.json\n  \
graft vocab trim --model gemma-3-270m.gguf --corpus en.jsonl --output gemma-en\n  \
graft vocab extend --model SmolLM2-135M-Instruct.Q8_0.gguf --corpus it.jsonl --add 2000 --output smollm2-it\n  \
graft vocab train --corpus it.jsonl --vocab-size 32000 --like SmolLM2-135M-Instruct.Q8_0.gguf --output it-tokenizer\n  \
graft vocab transplant --model SmolLM2-135M-Instruct.Q8_0.gguf --tokenizer it-tokenizer --output smollm2-it-tok"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: VocabCommand,
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
        VocabCommand::Trim(t) => super::vocab_edit::trim(t),
        VocabCommand::Extend(e) => super::vocab_edit::extend(e),
        VocabCommand::Train(t) => super::vocab_train::train(t),
        VocabCommand::Transplant(t) => super::vocab_transplant::transplant(t),
    }
}

/// The corpus's texts, each error naming its file and line.
pub(super) fn corpus_texts(corpus: &[PathBuf], field: &str) -> Result<Vec<String>> {
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
