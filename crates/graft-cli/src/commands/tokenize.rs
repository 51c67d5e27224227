//! `graft tokenize`: JSONL rows through a model's tokenizer alone, as transformers'
//! `tokenizer(text, add_special_tokens=…)` gives them: `{"text"}` → `{"input_ids", "tokens"}`,
//! or with `--decode` `{"input_ids"}` → `{"text"}`. Needs no weights: an HF folder with only its
//! tokenizer files, or a vocabulary-only GGUF, works.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use serde_json::{json, Value};

use crate::io::write_atomic;

#[derive(clap::Args, Debug)]
#[command(
    about = "Tokenize {\"text\"} rows (or decode {\"input_ids\"} rows) with a model's tokenizer",
    after_help = "Example:\n  graft tokenize --model SmolLM2-135M-Instruct.Q8_0.gguf --input rows.jsonl --output ids.jsonl\n\
  graft tokenize --model smollm2-hf --input ids.jsonl --output text.jsonl --decode"
)]
pub struct Args {
    /// HF directory (tokenizer files suffice) or .gguf file (a vocabulary-only GGUF suffices).
    #[arg(long)]
    pub model: PathBuf,
    /// JSONL (or Parquet) rows with `text` (or `input_ids` with --decode).
    #[arg(long)]
    pub input: PathBuf,
    /// JSONL output, one row per input row.
    #[arg(long)]
    pub output: PathBuf,
    /// Add no special tokens (BOS/EOS) when encoding; keep them when decoding.
    #[arg(long)]
    pub no_special: bool,
    /// Decode `input_ids` rows to `text` instead.
    #[arg(long)]
    pub decode: bool,
}

fn one(
    tok: &tokenizers::Tokenizer,
    row: &serde_json::Map<String, Value>,
    a: &Args,
) -> Result<Value> {
    if a.decode {
        let ids = row
            .get("input_ids")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("field `input_ids`: missing or not a list"))?
            .iter()
            .map(|v| v.as_u64().and_then(|x| u32::try_from(x).ok()))
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(|| anyhow!("field `input_ids`: not a list of token ids"))?;
        let vocab = tok.get_vocab_size(true) as u32;
        if let Some(bad) = ids.iter().find(|&&i| i >= vocab) {
            return Err(anyhow!(
                "field `input_ids`: id {bad} is outside the vocabulary ({vocab})"
            ));
        }
        let text = tok
            .decode(&ids, !a.no_special)
            .map_err(|e| anyhow!("{e}"))?;
        return Ok(json!({"text": text}));
    }
    let text = row
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("field `text`: missing or not a string"))?;
    let enc = tok
        .encode(text, !a.no_special)
        .map_err(|e| anyhow!("{e}"))?;
    Ok(json!({"input_ids": enc.get_ids(), "tokens": enc.get_tokens()}))
}

pub fn run(a: Args) -> Result<()> {
    crate::io::claim_outputs(&[&a.output], &[&a.input])?;
    let tok = super::data::tokenizer(&a.model)?;
    let mut out = String::new();
    for item in graft_data::source::rows_iter(&a.input).map_err(anyhow::Error::msg)? {
        let (line, row) = item.map_err(anyhow::Error::msg)?;
        let value =
            one(&tok.inner, &row, &a).map_err(|e| anyhow!("{}:{line}: {e}", a.input.display()))?;
        out.push_str(&value.to_string());
        out.push('\n');
    }
    write_atomic(&a.output, out.as_bytes())
}
