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
    /// How many new tokens (merges) to learn.
    #[arg(long)]
    pub add: usize,
    /// New rows: fvt (the mean of the old rows of the old tokens a new one is made of) or mean (of all old rows).
    #[arg(long, default_value = "fvt")]
    pub init: String,
}

/// The model, the corpus and the output of a vocabulary edit.
#[derive(clap::Args, Debug)]
pub struct EditIo {
    /// HF directory or .gguf file (a GGUF is written as an f32 HF directory, as `graft convert` does).
    #[arg(long)]
    pub model: PathBuf,
    /// JSONL/Parquet rows with a text field, or .txt files.
    #[arg(long, required = true, num_args = 1..)]
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
        corpus_texts(&self.corpus, &self.field)
    }
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
        other => bail!("--init: `{other}` is not known (fvt, mean)"),
    };
    if a.add == 0 {
        bail!("--add: must be at least 1");
    }
    let texts = a.io.texts()?;
    let (source, tok) = open(&a.io.model)?;
    let spinner = crate::io::spinner(&format!("learning {} merges", a.add));
    let learned = extend::learn(&tok, &texts, a.add)?;
    spinner.finish_and_clear();
    if learned.merges.len() < a.add {
        bail!(
            "--add {}: the corpus supports only {} new merges (no more pairs of tokens within its words)",
            a.add,
            learned.merges.len()
        );
    }
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
        "wrote {}: vocabulary {} -> {} ({} merges appended, new rows by {})",
        a.io.output.display(),
        s.vocabulary_before,
        s.vocabulary_after,
        s.added,
        a.init
    );
    Ok(())
}

pub fn trim(a: TrimArgs) -> Result<()> {
    use graft_models::vocab::trim;
    let texts = a.io.texts()?;
    let keep: Vec<String> = match &a.keep {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| anyhow!("{}: {e}", p.display()))?
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
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
