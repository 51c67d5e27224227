//! Shared CLI plumbing: model options, opening a model, JSONL reading with line numbers, and writing
//! outputs through a temporary file renamed into place.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use graft_models::{Decoder, Model, ModelSource, Quantization};

#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// HF model directory or .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// An adapter directory to apply on top of the model: PEFT's (LoRA, rsLoRA, DoRA, …) or an LST side network.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Kept for scripts: a GGUF file's quantized weights (linear layers, embeddings, head) are
    /// kept quantized by default. Products read them as stored; prompts and scores keep f32
    /// activations, generation steps multiply them with 8-bit activations, as llama.cpp.
    #[arg(long, conflicts_with_all = ["nf4", "dequantize"])]
    pub keep_quantized: bool,
    /// Dequantize a GGUF file's weights to --dtype when loading (more memory; generation steps
    /// then run in f32 like every other product).
    #[arg(long)]
    pub dequantize: bool,
    /// For a GGUF kept quantized: generation steps keep f32 activations too (results equal the
    /// dequantized model's to rounding, slower).
    #[arg(long, conflicts_with = "dequantize")]
    pub f32_activations: bool,
    /// Quantize an HF model's linear weights to NF4 with double quantization (QLoRA's base).
    #[arg(long)]
    pub nf4: bool,
    /// Compute dtype: f32 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

impl ModelArgs {
    pub fn dtype(&self) -> Result<DType> {
        match self.dtype.as_str() {
            "f32" => Ok(DType::F32),
            "bf16" => Ok(DType::BF16),
            other => bail!("--dtype: `{other}` is not supported (f32, bf16)"),
        }
    }

    /// Opens and builds a decoder-only model; prints the loader's warnings to stderr.
    pub fn load(&self) -> Result<(ModelSource, Decoder, Device)> {
        match self.load_any()? {
            (source, Model::Decoder(m), device) => Ok((source, m, device)),
            (source, Model::Seq2Seq(_), _) => Err(source.decoder_config().unwrap_err().into()),
        }
    }

    /// Opens and builds a decoder-only or encoder-decoder model, adapter applied.
    pub fn load_any(&self) -> Result<(ModelSource, Model, Device)> {
        let device = Device::Cpu;
        let dtype = self.dtype()?;
        if self.f32_activations {
            graft_models::qkernels::set_generation_activations(
                graft_models::qkernels::Activations::F32,
            );
        }
        let spinner = spinner(&format!("loading {}", self.model.display()));
        // A GGUF file stays quantized unless --dequantize; an HF directory is dense or NF4.
        let gguf = !self.model.is_dir();
        let quantization = match (self.keep_quantized, self.nf4) {
            (true, _) => Quantization::Stored,
            (_, true) => Quantization::Nf4 { double_quant: true },
            _ if gguf && !self.dequantize => Quantization::Stored,
            _ => Quantization::None,
        };
        let source = ModelSource::open_with(&self.model, dtype, &device, quantization)?;
        let mut model = source.build_model(dtype, &device)?;
        if let Some(dir) = &self.adapter {
            graft_adapters::load_onto_model(&mut model, dir)?;
        }
        spinner.finish_and_clear();
        for w in &source.warnings {
            eprintln!("warning: {}: {w}", self.model.display());
        }
        Ok((source, model, device))
    }
}

static FORCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--force`: outputs that exist may be replaced.
pub fn set_force(force: bool) {
    FORCE.store(force, std::sync::atomic::Ordering::Relaxed);
}

/// A path as it resolves on disk (a missing file by its resolved folder), for comparing paths.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    match (
        parent.map_or(Path::new(".").canonicalize(), Path::canonicalize),
        path.file_name(),
    ) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

/// Whether `--force` was given: outputs may replace existing ones.
pub fn force() -> bool {
    FORCE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Refuses, before anything is read or written, an output that exists (unless `--force`) or that
/// is one of the command's inputs (even with `--force`).
pub fn claim_outputs(outputs: &[&Path], inputs: &[&Path]) -> Result<()> {
    for out in outputs {
        let target = resolved(out);
        if let Some(input) = inputs.iter().find(|i| resolved(i) == target) {
            bail!(
                "{}: the output is also an input ({}); write elsewhere",
                out.display(),
                input.display()
            );
        }
        if out.exists() && !FORCE.load(std::sync::atomic::Ordering::Relaxed) {
            bail!("{}: exists; use --force to replace it", out.display());
        }
    }
    Ok(())
}

/// Writes `contents` to `path` atomically and durably (graft_models::fsio).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    graft_models::fsio::write_file(path, contents)
        .with_context(|| format!("{}: cannot write", path.display()))
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(total: u64, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{{spinner}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit} {{msg}} ETA {{eta}}"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// A spinner on stderr for work of unknown length (hidden when stderr is not a terminal).
pub fn spinner(msg: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(msg.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}
