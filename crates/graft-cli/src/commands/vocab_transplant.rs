//! `graft vocab transplant`: a model gets another tokenizer (mergekit-tokensurgeon's job); rows of
//! shared tokens are copied, the others built by FVT or by OMP over shared anchor tokens.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::io::claim_outputs;

#[derive(clap::Args, Debug)]
pub struct TransplantArgs {
    /// HF directory or .gguf file (a GGUF is written as an f32 HF directory, as `graft convert` does).
    #[arg(long)]
    pub model: PathBuf,
    /// The tokenizer to give it: an HF folder (tokenizer files suffice for fvt) or .gguf; for omp, a model with weights.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Rows of tokens the model lacks: fvt (the mean of the rows of the model's own tokenization) or omp (orthogonal matching pursuit over shared tokens in --tokenizer's model).
    #[arg(long, default_value = "fvt")]
    pub init: String,
    /// Shared tokens each OMP row combines at most.
    #[arg(long, default_value_t = 8)]
    pub k: usize,
    /// The HF directory to write.
    #[arg(long)]
    pub output: PathBuf,
}

pub fn transplant(a: TransplantArgs) -> Result<()> {
    use graft_models::vocab::transplant;
    let omp = match a.init.as_str() {
        "fvt" => false,
        "omp" => true,
        other => bail!("--init: `{other}` is not known (fvt, omp)"),
    };
    if a.k == 0 {
        bail!("--k: must be at least 1");
    }
    claim_outputs(&[&a.output], &[&a.model, &a.tokenizer])?;
    let new = super::data::tokenizer(&a.tokenizer)?;
    let spinner = crate::io::spinner(&format!("reading {}", a.model.display()));
    let f32 = candle_core::DType::F32;
    let cpu = candle_core::Device::Cpu;
    let source = graft_models::ModelSource::open(&a.model, f32, &cpu)?;
    let old = source.tokenizer()?.clone();
    let donor = match omp {
        true => Some(
            graft_models::ModelSource::open(&a.tokenizer, f32, &cpu).map_err(|e| {
                anyhow::anyhow!("--init omp reads the embeddings of --tokenizer's own model: {e}")
            })?,
        ),
        false => None,
    };
    spinner.finish_and_clear();
    let plan = transplant::plan(&old, &new, omp)?;
    let spinner = crate::io::spinner(&format!("writing {}", a.output.display()));
    let s = transplant::save_transplanted(
        &source,
        &old,
        &new,
        &a.tokenizer,
        plan,
        donor.as_ref(),
        a.k,
        &a.output,
        crate::io::force(),
    )?;
    spinner.finish_and_clear();
    println!(
        "wrote {}: vocabulary {} -> {}: {} rows copied (shared tokens), {} by FVT, {} by OMP, {} the mean (tokens the model cannot spell)",
        a.output.display(),
        s.vocabulary_before,
        s.vocabulary_after,
        s.plan.copied,
        s.plan.fvt,
        s.plan.omp,
        s.plan.mean
    );
    Ok(())
}
