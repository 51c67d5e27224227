//! `graft data tokenize`: `{"text"}` rows into a memory-mapped token cache, encoded in parallel
//! batches, with a progress bar in MB/s.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::data::{read, report_skipped, tokenizer};
use crate::io::progress;

#[derive(clap::Args, Debug)]
pub struct TokenizeArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub input: PathBuf,
    /// The cache folder to write.
    #[arg(long)]
    pub output: PathBuf,
    /// Append the tokenizer's EOS after each document.
    #[arg(long)]
    pub eos: bool,
}

pub fn tokenize(a: TokenizeArgs, skip: bool) -> Result<()> {
    crate::io::claim_outputs(&[&a.output.join("cache.json")], &[&a.input])?;
    let tok = tokenizer(&a.model)?;
    let mut rows = read(&a.input, skip)?;
    if skip {
        let mut missing = Vec::new();
        rows.retain(|(line, r)| {
            let ok = r.get("text").and_then(Value::as_str).is_some();
            if !ok {
                missing.push(format!(
                    "{}:{line}: field `text`: missing or not a string",
                    a.input.display()
                ));
            }
            ok
        });
        report_skipped(&missing);
    }
    let bytes: u64 = rows
        .iter()
        .map(|(_, r)| r.get("text").and_then(Value::as_str).map_or(0, str::len) as u64)
        .sum();
    let bar = progress(bytes, "bytes");
    let start = std::time::Instant::now();
    let vocab = tok.inner.get_vocab_size(true);
    let mut w = graft_data::token_cache::CacheWriter::create(&a.output, vocab)
        .map_err(anyhow::Error::msg)?;
    let eos = if a.eos {
        Some(tok.eos_id.with_context(|| {
            format!(
                "{}: --eos: the tokenizer has no EOS token",
                a.model.display()
            )
        })?)
    } else {
        None
    };
    // Batches of rows encoded in parallel by the tokenizers crate (as HF's encode_batch).
    for chunk in rows.chunks(1024) {
        let texts = chunk
            .iter()
            .map(|(line, row)| {
                row.get("text").and_then(Value::as_str).with_context(|| {
                    format!(
                        "{}:{line}: field `text`: missing or not a string",
                        a.input.display()
                    )
                })
            })
            .collect::<Result<Vec<&str>>>()?;
        let encodings = tok
            .inner
            .encode_batch(texts.clone(), true)
            .map_err(|e| anyhow::anyhow!("{}: {e}", a.input.display()))?;
        for (text, enc) in texts.iter().zip(encodings) {
            let mut ids = enc.get_ids().to_vec();
            ids.extend(eos);
            w.push(&ids).map_err(anyhow::Error::msg)?;
            bar.inc(text.len() as u64);
        }
        let mb_s = bar.position() as f64 / 1e6 / start.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!("{mb_s:.1} MB/s"));
    }
    bar.finish_and_clear();
    let info = w
        .finish(
            &a.model.display().to_string(),
            &a.input.display().to_string(),
        )
        .map_err(anyhow::Error::msg)?;
    println!(
        "{}",
        json!({"output": a.output, "documents": info.documents, "tokens": info.tokens, "dtype": info.dtype,
        "mb_per_second": bytes as f64 / 1e6 / start.elapsed().as_secs_f64().max(1e-9)})
    );
    Ok(())
}
