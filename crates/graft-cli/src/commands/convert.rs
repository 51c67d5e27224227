//! `graft convert`: a GGUF file to an HF directory (weights dequantized, tokenizer and chat template
//! rebuilt from the metadata), or an HF directory re-saved in another dtype.

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::Device;
use graft_models::ModelSource;

#[derive(clap::Args, Debug)]
#[command(
    about = "Convert a GGUF file (or an HF directory) into an HF directory with safetensors",
    after_help = "Examples:\n  graft convert SmolLM2-135M-Instruct.Q8_0.gguf smollm2-hf\n  graft convert ./model ./model-bf16 --dtype bf16\n\n\
Writing GGUF files is not supported yet."
)]
pub struct Args {
    /// A .gguf file or an HF model directory.
    pub input: PathBuf,
    /// The HF directory to create (must not exist).
    pub output: PathBuf,
    /// Weight dtype of the output: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

pub fn run(args: Args) -> Result<()> {
    let dtype = match args.dtype.as_str() {
        "f32" => candle_core::DType::F32,
        "bf16" => candle_core::DType::BF16,
        "f16" => candle_core::DType::F16,
        other => bail!("--dtype: `{other}` is not supported (f32, bf16, f16)"),
    };
    if args.output.extension().is_some_and(|e| e == "gguf") {
        bail!(
            "{}: writing GGUF is not supported yet; give a directory",
            args.output.display()
        );
    }
    let spinner = crate::io::spinner(&format!("reading {}", args.input.display()));
    let source = ModelSource::open(&args.input, candle_core::DType::F32, &Device::Cpu)?;
    spinner.set_message(format!("writing {}", args.output.display()));
    source.save_hf(&args.output, dtype)?;
    spinner.finish_and_clear();
    for w in &source.warnings {
        eprintln!("warning: {}: {w}", args.input.display());
    }
    println!(
        "wrote {} ({} model, {})",
        args.output.display(),
        source.config.model_type,
        args.dtype
    );
    Ok(())
}
