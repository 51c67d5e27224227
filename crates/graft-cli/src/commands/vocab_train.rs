//! `graft vocab train`: a BPE or Unigram tokenizer learned on a corpus, inside a model's pipeline
//! (`--like`) or a default one; written as an HF tokenizer folder that transformers loads.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use crate::io::claim_outputs;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// JSONL/Parquet rows with a text field, or .txt files (one row per paragraph).
    #[arg(long, required = true, num_args = 1..)]
    pub corpus: Vec<PathBuf>,
    /// The rows' text field.
    #[arg(long, default_value = "text")]
    pub field: String,
    /// Tokens in all, added and byte-fallback tokens included.
    #[arg(long)]
    pub vocab_size: usize,
    /// bpe or unigram.
    #[arg(long, default_value = "bpe")]
    pub kind: String,
    /// Keep this model's normalizer, pre-tokenizer, post-processor, decoder, added tokens and byte fallback (HF folder or .gguf).
    #[arg(long)]
    pub like: Option<PathBuf>,
    /// The most distinct words held while counting; past it the rarest are dropped (memory stays bounded).
    #[arg(long, default_value_t = 5_000_000)]
    pub max_words: usize,
    /// The tokenizer folder to write.
    #[arg(long)]
    pub output: PathBuf,
}

pub fn train(a: TrainArgs) -> Result<()> {
    use graft_models::vocab::train::{self, Kind};
    let kind = match a.kind.as_str() {
        "bpe" => Kind::Bpe,
        "unigram" => Kind::Unigram,
        other => bail!("--kind: `{other}` is not known (bpe, unigram)"),
    };
    let inputs: Vec<&std::path::Path> = a
        .corpus
        .iter()
        .chain(&a.like)
        .map(|p| p.as_path())
        .collect();
    claim_outputs(&[&a.output], &inputs)?;
    let like = a.like.as_deref().map(super::data::tokenizer).transpose()?;
    let template: Value = match &like {
        Some(t) => serde_json::from_str(&t.inner.to_string(false).map_err(|e| anyhow!("{e}"))?)?,
        None => train::default_template(kind),
    };
    let tk = tokenizers::Tokenizer::from_bytes(template.to_string().as_bytes())
        .map_err(|e| anyhow!("the template tokenizer: {e}"))?;
    let mut counts = train::WordCounts::new(a.max_words);
    let bar = crate::io::spinner("counting words");
    for path in &a.corpus {
        for item in graft_data::source::rows_iter(path).map_err(anyhow::Error::msg)? {
            let (line, row) = item.map_err(anyhow::Error::msg)?;
            let text = row.get(&a.field).and_then(Value::as_str).ok_or_else(|| {
                anyhow!(
                    "{}:{line}: field `{}`: missing or not a string",
                    path.display(),
                    a.field
                )
            })?;
            counts
                .add_text(&tk, text)
                .map_err(|e| anyhow!("{}:{line}: {e}", path.display()))?;
            bar.set_message(format!("counting words: {}", counts.words));
        }
    }
    bar.finish_and_clear();
    if counts.words == 0 {
        bail!("--corpus: no words in {} file(s)", a.corpus.len());
    }
    let spinner = crate::io::spinner(&format!("training a {}-token {}", a.vocab_size, a.kind));
    let trained = train::train(&template, &tk, &counts, kind, a.vocab_size)?;
    spinner.finish_and_clear();
    let config = train::tokenizer_config(like.as_ref(), kind, trained.unk_token.as_deref());
    let files = [
        ("tokenizer.json", trained.json),
        (
            "tokenizer_config.json",
            serde_json::to_string_pretty(&config)?,
        ),
    ];
    graft_models::save::save_tokenizer_dir(&a.output, &files, crate::io::force())?;
    println!(
        "wrote {}: {} tokens ({}; {} reserved: added, byte-fallback, unknown) from {} words ({} distinct{})",
        a.output.display(),
        trained.vocab_size,
        a.kind,
        trained.reserved,
        counts.words,
        counts.distinct(),
        match counts.approximate() {
            true => ", rare words dropped at --max-words",
            false => "",
        }
    );
    Ok(())
}
