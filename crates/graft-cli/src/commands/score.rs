//! `graft score`: per-token log-probs of JSONL rows.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use crate::io::{progress, write_atomic, ModelArgs};

#[derive(clap::Args, Debug)]
#[command(
    about = "Per-token log-probs of each JSONL row",
    after_help = "Rows: {\"text\": …} (tokenized as the model's tokenizer does, BOS included) or {\"input_ids\": […]}.\n\
Output rows: {\"input_ids\", \"token_logprobs\": [null, …], \"sum_logprob\", \"num_tokens\"}.\n\n\
Example:\n  graft score --model SmolLM2-135M-Instruct.Q8_0.gguf --input rows.jsonl --output scored.jsonl"
)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// JSONL (or Parquet) file of rows to score.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the scored JSONL (stdout when absent).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Token ids of one row, or an error naming the file, line and field.
fn row_ids(
    row: &Map<String, Value>,
    tokenizer: impl Fn(&str) -> Result<Vec<u32>>,
    vocab: usize,
) -> Result<Vec<u32>> {
    let ids = if let Some(v) = row.get("input_ids") {
        let items = v.as_array().context("field `input_ids`: not a list")?;
        items
            .iter()
            .enumerate()
            .map(|(i, x)| match x.as_u64() {
                Some(id) if (id as usize) < vocab => Ok(id as u32),
                Some(id) => {
                    bail!("field `input_ids[{i}]`: {id} is outside the vocabulary (size {vocab})")
                }
                None => bail!("field `input_ids[{i}]`: not a non-negative integer"),
            })
            .collect::<Result<Vec<_>>>()?
    } else if let Some(v) = row.get("text") {
        tokenizer(v.as_str().context("field `text`: not a string")?)?
    } else if row.contains_key("inputs") || row.contains_key("targets") {
        bail!("fields `inputs`/`targets`: seq2seq rows need an encoder-decoder model")
    } else {
        bail!("no `text` or `input_ids` field")
    };
    if ids.is_empty() {
        bail!("the row has no tokens");
    }
    Ok(ids)
}

pub fn run(args: Args) -> Result<()> {
    let rows = graft_data::source::read_rows(&args.input).map_err(anyhow::Error::msg)?;
    let (source, model, device) = args.model.load()?;
    let vocab = model.cfg.vocab_size;
    let encode = |text: &str| -> Result<Vec<u32>> { Ok(source.tokenizer()?.encode(text, true)?) };
    let ids = rows
        .iter()
        .map(|(line, row)| {
            row_ids(row, encode, vocab).with_context(|| format!("{}:{line}", args.input.display()))
        })
        .collect::<Result<Vec<_>>>()?;

    let total: usize = ids.iter().map(Vec::len).sum();
    let bar = progress(total as u64, "tokens");
    let start = std::time::Instant::now();
    let scored = graft_models::score::score_rows(&model, &ids, &device, |n| {
        bar.inc(n as u64);
        bar.set_message(format!(
            "{:.0} tok/s",
            bar.position() as f64 / start.elapsed().as_secs_f64()
        ));
    })?;
    bar.finish_and_clear();

    let mut out = String::new();
    for (ids, lp) in ids.iter().zip(&scored) {
        let mut token_logprobs = vec![Value::Null];
        token_logprobs.extend(lp.iter().map(|&x| json!(x)));
        let sum: f64 = lp.iter().map(|&x| x as f64).sum();
        let line = json!({"input_ids": ids, "token_logprobs": token_logprobs, "sum_logprob": sum, "num_tokens": lp.len()});
        out.push_str(&line.to_string());
        out.push('\n');
    }
    match &args.output {
        Some(path) => write_atomic(path, out.as_bytes())?,
        None => print!("{out}"),
    }
    Ok(())
}
