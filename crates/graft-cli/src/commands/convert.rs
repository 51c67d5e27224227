//! `graft convert`: a GGUF file to an HF directory (weights dequantized, tokenizer and chat template
//! rebuilt from the metadata), or an HF directory re-saved in another dtype.

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::Device;
use graft_models::ModelSource;

#[derive(clap::Args, Debug)]
#[command(
    about = "Convert a GGUF file (or an HF directory) into an HF directory with safetensors",
    after_help = "Examples:\n  graft convert SmolLM2-135M-Instruct.Q8_0.gguf smollm2-hf\n  graft convert ./model ./model-bf16 --dtype bf16\n  graft convert ./base ./merged --merge-adapter runs/lora/final\n\n\
Writing GGUF files is not supported yet."
)]
pub struct Args {
    /// A .gguf file or an HF model directory.
    pub input: PathBuf,
    /// The HF directory to create (must not exist).
    pub output: PathBuf,
    /// Merge this PEFT adapter (LoRA/DoRA) into the weights, as PEFT's merge_and_unload.
    #[arg(long)]
    pub merge_adapter: Option<PathBuf>,
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
    match &args.merge_adapter {
        None => source.save_hf(&args.output, dtype, crate::io::force())?,
        Some(dir) => {
            let mut model = source.build(candle_core::DType::F32, &Device::Cpu)?;
            graft_adapters::load_onto(&mut model, dir)?;
            let (cfg, _) = graft_adapters::peft_format::load(dir)?;
            let saved = cfg.modules_to_save().map_err(anyhow::Error::msg)?;
            let mut tensors = source.tensors(dtype)?;
            for (name, w) in graft_adapters::merged_weights(&mut model, &saved)? {
                tensors.insert(name, w.to_dtype(dtype)?);
            }
            let files = source.tokenizer_files()?;
            graft_models::save::save_hf_dir(
                &args.output,
                &source.config_json_for(dtype),
                &tensors,
                &files,
                crate::io::force(),
            )?;
        }
    }
    spinner.finish_and_clear();
    for w in &source.warnings {
        eprintln!("warning: {}: {w}", args.input.display());
    }
    println!(
        "wrote {} ({} model, {})",
        args.output.display(),
        source.config_json["model_type"].as_str().unwrap_or("?"),
        args.dtype
    );
    Ok(())
}
