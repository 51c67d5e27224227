//! `graft data`: look at and prepare training data — inspect, stats, tokenize (token cache), dedup
//! (exact, MinHash near-duplicates, quality filters), decontaminate (Tulu 3 n-gram overlap).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::io::progress;

#[derive(clap::Subcommand, Debug)]
pub enum DataCommand {
    /// Print the first rows of a file (JSONL, Parquet, .txt), with their token counts given --model.
    Inspect(InspectArgs),
    /// Rows, words and tokens per file (and per `--group-by` field), length histogram PNG.
    Stats(StatsArgs),
    /// Tokenize `{"text"}` rows into a memory-mapped token cache (tokens.bin, offsets.bin, cache.json).
    Tokenize(TokenizeArgs),
    /// Drop exact and near duplicates (MinHash + LSH) and rows failing quality filters; report why.
    Dedup(super::data_clean::DedupArgs),
    /// Drop training rows that overlap eval sets (8-gram matching as Tulu 3); report each match.
    Decontaminate(super::data_clean::DecontaminateArgs),
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    pub input: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub rows: usize,
    /// Also show token counts with this model's tokenizer.
    #[arg(long)]
    pub model: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Also count per value of this field (e.g. `language`).
    #[arg(long)]
    pub group_by: Option<String>,
    /// Write a histogram of row lengths (tokens with --model, else words) to this PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

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

pub fn run(args: Args) -> Result<()> {
    match args.command {
        DataCommand::Inspect(a) => inspect(a),
        DataCommand::Stats(a) => stats(a),
        DataCommand::Tokenize(a) => tokenize(a),
        DataCommand::Dedup(a) => super::data_clean::dedup(a),
        DataCommand::Decontaminate(a) => super::data_clean::decontaminate(a),
    }
}

fn tokenizer(model: &Path) -> Result<graft_models::Tokenizer> {
    let source =
        graft_models::ModelSource::open(model, candle_core::DType::F32, &candle_core::Device::Cpu)?;
    Ok(source.tokenizer()?.clone())
}

fn inspect(a: InspectArgs) -> Result<()> {
    let rows = graft_data::source::read_rows(&a.input).map_err(anyhow::Error::msg)?;
    let tok = a.model.as_deref().map(tokenizer).transpose()?;
    println!("{}: {} rows", a.input.display(), rows.len());
    for (line, row) in rows.iter().take(a.rows) {
        let text = graft_data::decontaminate::content_text(&Value::Object(row.clone()));
        let tokens = match &tok {
            Some(t) => format!(", {} tokens", t.encode(&text, true)?.len()),
            None => String::new(),
        };
        println!(
            "--- line {line}{tokens}\n{}",
            serde_json::to_string_pretty(row)?
        );
    }
    Ok(())
}

fn stats(a: StatsArgs) -> Result<()> {
    let tok = a.model.as_deref().map(tokenizer).transpose()?;
    let mut lengths = Vec::new();
    let mut report = Vec::new();
    for path in &a.inputs {
        let rows = graft_data::source::read_rows(path).map_err(anyhow::Error::msg)?;
        let bar = progress(rows.len() as u64, "rows");
        let mut groups: std::collections::BTreeMap<String, (usize, usize, usize)> =
            Default::default();
        let (mut words, mut tokens) = (0usize, 0usize);
        for (_, row) in &rows {
            let text = graft_data::decontaminate::content_text(&Value::Object(row.clone()));
            let w = graft_data::decontaminate::words(&text).len();
            let t = match &tok {
                Some(tk) => tk.encode(&text, true)?.len(),
                None => 0,
            };
            words += w;
            tokens += t;
            lengths.push(if tok.is_some() { t } else { w } as f64);
            if let Some(field) = &a.group_by {
                let key = row.get(field).map_or("<missing>".to_string(), |v| {
                    v.as_str().map_or(v.to_string(), str::to_string)
                });
                let g = groups.entry(key).or_default();
                *g = (g.0 + 1, g.1 + w, g.2 + t);
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let mut entry = json!({"file": path, "rows": rows.len(), "words": words});
        if tok.is_some() {
            entry["tokens"] = json!(tokens);
        }
        if a.group_by.is_some() {
            entry["groups"] = groups
                .iter()
                .map(|(k, (r, w, t))| (k.clone(), json!({"rows": r, "words": w, "tokens": t})))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        report.push(entry);
    }
    for r in &report {
        println!("{r}");
    }
    if let Some(png) = &a.plot {
        let unit = if tok.is_some() { "tokens" } else { "words" };
        graft_train::metrics::histogram(&lengths, png, &format!("row length ({unit})"), unit)?;
        println!("plot: {}", png.display());
    }
    Ok(())
}

fn tokenize(a: TokenizeArgs) -> Result<()> {
    let tok = tokenizer(&a.model)?;
    let rows = graft_data::source::read_rows(&a.input).map_err(anyhow::Error::msg)?;
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
