//! `graft score`: per-token log-probs of JSONL rows.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use candle_core::Device;
use graft_models::{ModelSource, T5};

use crate::io::{progress, write_atomic, ModelArgs};
use graft_models::Model;

#[derive(clap::Args, Debug)]
#[command(
    about = "Per-token log-probs of each JSONL row",
    after_help = "Rows: {\"text\": …} (tokenized as the model's tokenizer does, BOS included) or {\"input_ids\": […]}.\n\
Output rows: {\"input_ids\", \"token_logprobs\": [null, …], \"sum_logprob\", \"num_tokens\"}.\n\
Encoder-decoder models (T5): rows {\"inputs\", \"targets\"} (or {\"input_ids\", \"target_ids\"}); output rows\n\
{\"input_ids\", \"target_ids\", \"token_logprobs\", \"sum_logprob\", \"num_tokens\"} with token_logprobs[i] =\n\
log p(target_ids[i] | inputs, target_ids[..i]); targets end with EOS as the tokenizer adds it.\n\n\
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

/// The ids in field `field` (a list of token ids) or, failing that, the tokenized `text_field`.
fn field_ids(
    row: &Map<String, Value>,
    field: &str,
    text_field: &str,
    tokenizer: &impl Fn(&str) -> Result<Vec<u32>>,
    vocab: usize,
) -> Result<Vec<u32>> {
    let ids = if let Some(v) = row.get(field) {
        let items = v
            .as_array()
            .with_context(|| format!("field `{field}`: not a list"))?;
        items
            .iter()
            .enumerate()
            .map(|(i, x)| match x.as_u64() {
                Some(id) if (id as usize) < vocab => Ok(id as u32),
                Some(id) => {
                    bail!("field `{field}[{i}]`: {id} is outside the vocabulary (size {vocab})")
                }
                None => bail!("field `{field}[{i}]`: not a non-negative integer"),
            })
            .collect::<Result<Vec<_>>>()?
    } else if let Some(v) = row.get(text_field) {
        tokenizer(
            v.as_str()
                .with_context(|| format!("field `{text_field}`: not a string"))?,
        )?
    } else {
        bail!("no `{text_field}` or `{field}` field")
    };
    if ids.is_empty() {
        bail!("field `{text_field}`: no tokens");
    }
    Ok(ids)
}

/// Token ids of one decoder row, or an error naming the field.
fn row_ids(
    row: &Map<String, Value>,
    tokenizer: impl Fn(&str) -> Result<Vec<u32>>,
    vocab: usize,
) -> Result<Vec<u32>> {
    if !row.contains_key("text") && (row.contains_key("inputs") || row.contains_key("targets")) {
        bail!("fields `inputs`/`targets`: seq2seq rows need an encoder-decoder model");
    }
    field_ids(row, "input_ids", "text", &tokenizer, vocab)
}

/// `graft score` for an encoder-decoder model.
fn run_seq2seq(args: &Args, source: &ModelSource, model: &T5) -> Result<String> {
    let rows = graft_data::source::read_rows(&args.input).map_err(anyhow::Error::msg)?;
    let vocab = model.cfg.vocab_size;
    let encode = |text: &str| -> Result<Vec<u32>> { Ok(source.tokenizer()?.encode(text, true)?) };
    let pairs = rows
        .iter()
        .map(|(line, row)| {
            let input = field_ids(row, "input_ids", "inputs", &encode, vocab);
            let target = field_ids(row, "target_ids", "targets", &encode, vocab);
            input
                .and_then(|i| target.map(|t| (i, t)))
                .with_context(|| format!("{}:{line}", args.input.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let total: usize = pairs.iter().map(|(i, t)| i.len() + t.len()).sum();
    let bar = progress(total as u64, "tokens");
    let scored =
        graft_models::score::score_seq2seq(model, &pairs, &Device::Cpu, |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    let mut out = String::new();
    for ((input, target), lp) in pairs.iter().zip(&scored) {
        let sum: f64 = lp.iter().map(|&x| x as f64).sum();
        let line = json!({"input_ids": input, "target_ids": target, "token_logprobs": lp, "sum_logprob": sum, "num_tokens": lp.len()});
        out.push_str(&line.to_string());
        out.push('\n');
    }
    Ok(out)
}

fn emit(args: &Args, out: &str) -> Result<()> {
    match &args.output {
        Some(path) => write_atomic(path, out.as_bytes()),
        None => {
            print!("{out}");
            Ok(())
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    crate::io::claim_outputs(
        &args.output.iter().map(|p| p.as_path()).collect::<Vec<_>>(),
        &[&args.input],
    )?;
    let (source, model, device) = match args.model.load_any()? {
        (source, Model::Seq2Seq(t5), _) => return emit(&args, &run_seq2seq(&args, &source, &t5)?),
        (source, Model::Decoder(m), device) => (source, m, device),
    };
    let rows = graft_data::source::read_rows(&args.input).map_err(anyhow::Error::msg)?;
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
    emit(&args, &out)
}
