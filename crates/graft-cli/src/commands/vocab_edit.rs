//! `graft vocab trim` and `graft vocab extend`: a model's vocabulary cut down to a corpus, or
//! grown by BPE merges learned on one; both write an HF directory (a GGUF as f32, as `graft
//! convert` writes it).

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};

use super::vocab::corpus_texts;
use crate::io::claim_outputs;

#[derive(clap::Args, Debug)]
pub struct TrimArgs {
    #[command(flatten)]
    pub io: EditIo,
    /// Keep tokens used at least this many times.
    #[arg(long, default_value_t = 1, conflicts_with = "top")]
    pub min_frequency: u64,
    /// Keep the N most used tokens instead.
    #[arg(long)]
    pub top: Option<usize>,
    /// A file of tokens to keep as well, one per line (as the vocabulary spells them).
    #[arg(long)]
    pub keep: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ExtendArgs {
    #[command(flatten)]
    pub io: EditIo,
    /// How many new tokens (merges) to learn on the corpus.
    #[arg(long, required_unless_present = "tokens", conflicts_with = "tokens")]
    pub add: Option<usize>,
    /// Add these tokens instead, one per line as the vocabulary spells them (`Ġgatto`, `▁gatto`), built by merges.
    #[arg(long)]
    pub tokens: Option<PathBuf>,
    /// New rows: fvt (the mean of the old rows of the old tokens a new one is made of), mean (of all old rows) or normal (drawn from the old rows' mean and 1e-9 × covariance, transformers' mean_resizing).
    #[arg(long, default_value = "fvt")]
    pub init: String,
    /// Seed of `--init normal`.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The model, the corpus and the output of a vocabulary edit.
#[derive(clap::Args, Debug)]
pub struct EditIo {
    /// HF directory or .gguf file (a GGUF is written as an f32 HF directory, as `graft convert` does).
    #[arg(long)]
    pub model: PathBuf,
    /// JSONL/Parquet rows with a text field, or .txt files.
    #[arg(long, num_args = 1..)]
    pub corpus: Vec<PathBuf>,
    /// The rows' text field.
    #[arg(long, default_value = "text")]
    pub field: String,
    /// The HF directory to write.
    #[arg(long)]
    pub output: PathBuf,
}

impl EditIo {
    /// Claims the output, then reads the corpus's texts.
    fn texts(&self) -> Result<Vec<String>> {
        let inputs: Vec<&std::path::Path> = self
            .corpus
            .iter()
            .chain([&self.model])
            .map(PathBuf::as_path)
            .collect();
        claim_outputs(&[&self.output], &inputs)?;
        if self.corpus.is_empty() {
            bail!("--corpus: required");
        }
        corpus_texts(&self.corpus, &self.field)
    }
}

/// The non-empty lines of a token list.
fn read_lines(p: &std::path::Path) -> Result<Vec<String>> {
    Ok(std::fs::read_to_string(p)
        .map_err(|e| anyhow!("{}: {e}", p.display()))?
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// The model (as f32) and its tokenizer, with a spinner while reading.
fn open(model: &std::path::Path) -> Result<(graft_models::ModelSource, graft_models::Tokenizer)> {
    let spinner = crate::io::spinner(&format!("reading {}", model.display()));
    let source =
        graft_models::ModelSource::open(model, candle_core::DType::F32, &candle_core::Device::Cpu)?;
    let tok = source.tokenizer()?.clone();
    spinner.finish_and_clear();
    Ok((source, tok))
}

pub fn extend(a: ExtendArgs) -> Result<()> {
    use graft_models::vocab::extend;
    let init = match a.init.as_str() {
        "fvt" => extend::Init::Fvt,
        "mean" => extend::Init::Mean,
        "normal" => extend::Init::Normal(a.seed),
        other => bail!("--init: `{other}` is not known (fvt, mean, normal)"),
    };
    let learned = match (a.add, &a.tokens) {
        (Some(0), _) => bail!("--add: must be at least 1"),
        (Some(add), _) => {
            let texts = a.io.texts()?;
            let (source, tok) = open(&a.io.model)?;
            let spinner = crate::io::spinner(&format!("learning {add} merges"));
            let learned = extend::learn(&tok, &texts, add)?;
            spinner.finish_and_clear();
            if learned.merges.len() < add {
                bail!(
                    "--add {add}: the corpus supports only {} new merges (no more pairs of tokens within its words)",
                    learned.merges.len()
                );
            }
            (source, tok, learned)
        }
        (None, Some(file)) => {
            claim_outputs(&[&a.io.output], &[&a.io.model, file])?;
            let tokens = read_lines(file)?;
            if tokens.is_empty() {
                bail!("{}: no tokens", file.display());
            }
            let (source, tok) = open(&a.io.model)?;
            let learned = extend::learn_tokens(&tok, &tokens)?;
            (source, tok, learned)
        }
        (None, None) => unreachable!("clap requires --add or --tokens"),
    };
    let (source, tok, learned) = learned;
    let spinner = crate::io::spinner(&format!("writing {}", a.io.output.display()));
    let s = extend::save_extended(
        &source,
        &tok,
        &learned,
        init,
        &a.io.output,
        crate::io::force(),
    )?;
    spinner.finish_and_clear();
    println!(
        "wrote {}: vocabulary {} -> {} ({} merges appended, {} new tokens, rows by {})",
        a.io.output.display(),
        s.vocabulary_before,
        s.vocabulary_after,
        learned.merges.len(),
        s.added,
        a.init
    );
    Ok(())
}

pub fn trim(a: TrimArgs) -> Result<()> {
    use graft_models::vocab::trim;
    let texts = a.io.texts()?;
    let keep: Vec<String> = match &a.keep {
        Some(p) => read_lines(p)?,
        None => Vec::new(),
    };
    let (source, tok) = open(&a.io.model)?;
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
    let spinner = crate::io::spinner(&format!("writing {}", a.io.output.display()));
    let s = trim::save_trimmed(&source, &tok, &kept, &a.io.output, crate::io::force())?;
    spinner.finish_and_clear();
    println!(
        "wrote {}: vocabulary {} -> {}, parameters {} -> {} ({:.1}% fewer)",
        a.io.output.display(),
        s.vocabulary_before,
        s.vocabulary_after,
        s.parameters_before,
        s.parameters_after,
        100.0 * (1.0 - s.parameters_after as f64 / s.parameters_before.max(1) as f64)
    );
    Ok(())
}
