//! `graft train`: run a recipe.

use std::path::PathBuf;

use anyhow::{Context, Result};
use graft_train::{recipe, train, TrainOptions};

#[derive(clap::Args, Debug)]
#[command(
    about = "Train from a TOML recipe: pretraining, SFT, preference alignment, full or with an adapter",
    after_help = "Objectives ([objective] kind): lm, sft, minor_sft, dpo, cdpo, robust, ipo, dpo_norm, slic, simpo,\n\
orpo, kto, minor_dpo, lipo. Adapters ([adapter] kind): lora, dora, sltrain, mtlora, lst;\n\
QLoRA with [model] quantized = \"nf4\" or a .gguf base. Seq2seq (T5) with span corruption or UL2 in [data].\n\
Writes OUT/metrics.jsonl, OUT/checkpoint-<step>/, OUT/final/ (an HF directory or a PEFT adapter), OUT/loss.png,\n\
OUT/manifest.json.\n\n\
Examples:\n  graft train recipes/smollm2-full-sft.toml\n  graft train recipes/smollm2-qlora-sft.toml --set train.lr=1e-4 --set train.steps=200 --output runs/try2\n  graft train recipes/smollm2-qlora-sft.toml --resume"
)]
pub struct Args {
    /// The recipe (TOML).
    pub recipe: PathBuf,
    /// Override a recipe key, e.g. --set train.lr=1e-4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Continue from the latest checkpoint in the output folder.
    #[arg(long)]
    pub resume: bool,
    /// Skip rows that do not parse or tokenize, count them and list them in manifest.json.
    #[arg(long)]
    pub skip_bad_rows: bool,
    /// Output folder (default: the recipe's `output`, else runs/<recipe name>).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let mut recipe = recipe::load(&args.recipe, &args.set).map_err(anyhow::Error::msg)?;
    recipe.data.skip_bad_rows |= args.skip_bad_rows;
    let output = args
        .output
        .clone()
        .or(recipe.output.clone())
        .unwrap_or_else(|| {
            PathBuf::from("runs").join(
                args.recipe
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or("run".into()),
            )
        });
    let summary = train(
        &recipe,
        &TrainOptions {
            output: output.clone(),
            resume: args.resume,
            progress: true,
        },
    )
    .with_context(|| format!("training {}", args.recipe.display()))?;
    println!(
        "trained {} steps: loss {:.4} → {:.4}{}",
        summary.steps,
        summary.first_loss.unwrap_or(f64::NAN),
        summary.last_loss.unwrap_or(f64::NAN),
        summary
            .final_eval_loss
            .map(|e| format!(", eval loss {e:.4}"))
            .unwrap_or_default()
    );
    println!(
        "model: {}  metrics: {}  plot: {}  manifest: {}",
        output.join("final").display(),
        output.join("metrics.jsonl").display(),
        output.join("loss.png").display(),
        output.join("manifest.json").display()
    );
    Ok(())
}
