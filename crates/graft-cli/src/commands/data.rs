//! `graft data`: look at and prepare training data — inspect, stats, tokenize (token cache), dedup
//! (exact, MinHash near-duplicates, quality filters), decontaminate (Tulu 3 n-gram overlap), rso
//! (rejection-sampled preference pairs).

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::{json, Value};

use crate::io::progress;

#[derive(clap::Subcommand, Debug)]
pub enum DataCommand {
    /// Print the first rows of a file (JSONL, Parquet, .txt), with their token counts given --model.
    Inspect(InspectArgs),
    /// Rows, words and tokens per file (and per `--group-by` field), length histogram PNG.
    Stats(StatsArgs),
    /// Tokenize `{"text"}` rows into a memory-mapped token cache (tokens.bin, offsets.bin, cache.json).
    Tokenize(super::data_tokenize::TokenizeArgs),
    /// Drop exact and near duplicates (MinHash + LSH) and rows failing quality filters; report why.
    Dedup(super::data_clean::DedupArgs),
    /// Drop training rows that overlap eval sets (8-gram matching as Tulu 3); report each match.
    Decontaminate(super::data_clean::DecontaminateArgs),
    /// RSO: statistical rejection sampling of scored candidates, then preference pairs.
    Rso(super::data_rso::RsoArgs),
}

#[derive(clap::Args, Debug)]
#[command(
    about = "Look at and prepare training data: inspect, stats, tokenize, dedup, decontaminate, rso",
    after_help = "Examples:\n  graft data inspect train.jsonl --model SmolLM2-135M-Instruct.Q8_0.gguf\n  \
graft data stats train.jsonl --group-by language --plot lengths.png\n  \
graft data dedup --input raw.jsonl --output clean.jsonl --report dropped.jsonl --near\n  \
graft data decontaminate --input sft.jsonl --eval gsm8k_test.jsonl --output clean.jsonl --report hits.jsonl"
)]
pub struct Args {
    /// Skip rows that are not valid JSON or lack the needed field: count them and report them on
    /// stderr instead of stopping at the first.
    #[arg(long, global = true)]
    pub skip_bad_rows: bool,
    #[command(subcommand)]
    pub command: DataCommand,
}

/// Reports skipped rows on stderr: how many, and the first few errors.
pub(super) fn report_skipped(errors: &[String]) {
    if !errors.is_empty() {
        eprintln!("skipped {} bad rows", errors.len());
        for e in errors.iter().take(5) {
            eprintln!("  {e}");
        }
    }
}

/// The rows of `path`; with --skip-bad-rows, unparsable rows are skipped and reported.
pub(super) fn read(path: &Path, skip: bool) -> Result<Vec<graft_data::source::NumberedRow>> {
    if !skip {
        return graft_data::source::read_rows(path).map_err(anyhow::Error::msg);
    }
    let (mut rows, mut errors) = (Vec::new(), Vec::new());
    for item in graft_data::source::rows_iter(path).map_err(anyhow::Error::msg)? {
        match item {
            Ok(r) => rows.push(r),
            Err(e) => errors.push(e),
        }
    }
    report_skipped(&errors);
    Ok(rows)
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    #[arg(required_unless_present = "recipe")]
    pub input: Option<PathBuf>,
    /// Instead of a file: each task of this recipe, its rows after the task's preprocessors, and
    /// how many rows each preprocessor kept of those read.
    #[arg(long, conflicts_with = "input")]
    pub recipe: Option<PathBuf>,
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

pub fn run(args: Args) -> Result<()> {
    let skip = args.skip_bad_rows;
    match args.command {
        DataCommand::Inspect(a) => inspect(a, skip),
        DataCommand::Stats(a) => stats(a, skip),
        DataCommand::Tokenize(a) => super::data_tokenize::tokenize(a, skip),
        DataCommand::Dedup(a) => super::data_clean::dedup(a, skip),
        DataCommand::Decontaminate(a) => super::data_clean::decontaminate(a, skip),
        DataCommand::Rso(a) => super::data_rso::rso(a, skip),
    }
}

/// The tokenizer alone (no weights read: a vocabulary-only GGUF or a folder with only the
/// tokenizer files works), its approximations reported once.
pub(super) fn tokenizer(model: &Path) -> Result<graft_models::Tokenizer> {
    let (tok, warnings) = graft_models::open_tokenizer(model)?;
    for w in warnings {
        eprintln!("warning: {}: {w}", model.display());
    }
    Ok(tok)
}

fn inspect(a: InspectArgs, skip: bool) -> Result<()> {
    let tok = a.model.as_deref().map(tokenizer).transpose()?;
    let Some(input) = &a.input else {
        let recipe = a.recipe.as_deref().expect("clap: input or --recipe");
        return inspect_tasks(recipe, a.rows, tok.as_ref());
    };
    let rows = read(input, skip)?;
    println!("{}: {} rows", input.display(), rows.len());
    print_rows(&rows[..rows.len().min(a.rows)], tok.as_ref())
}

fn print_rows(
    rows: &[graft_data::source::NumberedRow],
    tok: Option<&graft_models::Tokenizer>,
) -> Result<()> {
    for (line, row) in rows {
        let text = graft_data::decontaminate::content_text(&Value::Object(row.clone()));
        let tokens = match tok {
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

/// The first `n` rows of each task of `recipe` after its preprocessors.
fn inspect_tasks(recipe: &Path, n: usize, tok: Option<&graft_models::Tokenizer>) -> Result<()> {
    let r = graft_train::recipe::load(recipe, &[]).map_err(anyhow::Error::msg)?;
    let tasks = match &r.data.train {
        Some(t) => vec![("train".to_string(), t.clone(), Vec::new(), None)],
        None => r
            .data
            .tasks
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.train.clone(),
                    t.preprocessors.clone(),
                    t.features.clone(),
                )
            })
            .collect(),
    };
    for (name, path, specs, features) in tasks {
        let pipeline = graft_data::preprocess::Pipeline::new(&specs, features)
            .map_err(|e| anyhow::anyhow!("{}: data.tasks `{name}`: {e}", recipe.display()))?;
        let mut out = Vec::new();
        for item in graft_data::source::rows_iter(&path).map_err(anyhow::Error::msg)? {
            let (line, row) = item.map_err(anyhow::Error::msg)?;
            let rows = pipeline
                .run(row)
                .map_err(|e| anyhow::anyhow!("{}:{line}: {e}", path.display()))?;
            out.extend(rows.into_iter().map(|r| (line, r)));
            if out.len() >= n {
                break;
            }
        }
        out.truncate(n);
        println!("task {name} ({})", path.display());
        for s in pipeline.report() {
            println!("  {}: kept {} of {} rows", s.kind, s.rows_out, s.rows_in);
        }
        print_rows(&out, tok)?;
    }
    Ok(())
}

fn stats(a: StatsArgs, skip: bool) -> Result<()> {
    let tok = a.model.as_deref().map(tokenizer).transpose()?;
    let mut lengths = Vec::new();
    let mut report = Vec::new();
    for path in &a.inputs {
        let rows = read(path, skip)?;
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
