//! `graft merge`: a mergekit YAML config run tensor by tensor into an HF directory.

use std::path::PathBuf;

use anyhow::{Context, Result};
use graft_merge::{MergeConfig, Options};

use crate::io::progress;

#[derive(clap::Args, Debug)]
#[command(
    about = "Merge models from a mergekit YAML config (linear, slerp, task_arithmetic, ties, dare_linear, dare_ties, model_stock, passthrough)",
    after_help = "The config is mergekit's: `models` or `slices` (with layer_range), base_model, merge_method,\n\
parameters (scalars, layer gradients, filter lists), dtype, out_dtype, tokenizer_source (base, union or a\n\
model path). Relative model paths are taken from the working directory, as mergekit does. Keys\n\
mergekit would silently ignore are errors here.\n\n\
Example:\n  graft merge slerp.yml --out merged/"
)]
pub struct Args {
    /// The mergekit YAML config.
    pub config: PathBuf,
    /// Output HF directory (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of DARE's random drops.
    #[arg(long, default_value_t = 0)]
    pub random_seed: u64,
    /// Largest output shard, in bytes (mergekit's default: 5 GB).
    #[arg(long, default_value_t = 5_000_000_000)]
    pub out_shard_size: usize,
}

pub fn run(args: Args) -> Result<()> {
    let cfg = MergeConfig::read(&args.config)?;
    let opts = Options {
        seed: args.random_seed,
        shard_bytes: args.out_shard_size,
        base_dir: std::env::current_dir().context("the working directory")?,
    };
    let bar = progress(0, "tensors");
    let start = std::time::Instant::now();
    let summary = graft_merge::run(&cfg, &args.out, &opts, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| args.config.display().to_string())?;
    bar.finish_and_clear();
    eprintln!(
        "merged {} tensors ({} layers, {:.2} MB) with {} into {} in {:.1}s",
        summary.tensors,
        summary.layers,
        summary.bytes as f64 / 1e6,
        cfg.merge_method,
        args.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
