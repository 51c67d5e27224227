//! `graft quickstart`: the embedded default — a tiny Llama-family model bundled in the binary is
//! written to a folder, scored on bundled text and asked to generate, end to end, with no download.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::io::{write_atomic, ModelArgs};

const FILES: &[(&str, &[u8])] = &[
    ("config.json", include_bytes!("../../../../tests/fixtures/models/llama/config.json")),
    ("model.safetensors", include_bytes!("../../../../tests/fixtures/models/llama/model.safetensors")),
    ("tokenizer.json", include_bytes!("../../../../tests/fixtures/models/llama/tokenizer.json")),
    ("tokenizer_config.json", include_bytes!("../../../../tests/fixtures/models/llama/tokenizer_config.json")),
    ("generation_config.json", include_bytes!("../../../../tests/fixtures/models/llama/generation_config.json")),
];

const TEXT: &str = "the quick brown fox jumps over the lazy dog";

#[derive(clap::Args, Debug)]
#[command(
    about = "Run the embedded default end to end (no download): score and generate with a bundled tiny model",
    after_help = "Example:\n  cargo run --release -- quickstart --output runs/quickstart"
)]
pub struct Args {
    /// Folder for the bundled model and the outputs.
    #[arg(long, default_value = "runs/quickstart")]
    pub output: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let model_dir = args.output.join("model");
    for (name, bytes) in FILES {
        write_atomic(&model_dir.join(name), bytes)?;
    }
    println!("1/3 wrote the bundled tiny Llama (hidden 32, 3 layers, random weights) to {}", model_dir.display());

    let input = args.output.join("score-input.jsonl");
    write_atomic(&input, format!("{}\n", serde_json::json!({ "text": TEXT })).as_bytes())?;
    let scored = args.output.join("scored.jsonl");
    let model = ModelArgs { model: model_dir.clone(), dtype: "f32".into() };
    super::score::run(super::score::Args { model: model.clone(), input, output: Some(scored.clone()) })?;
    let row: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&scored)?.trim()).context("reading back the scores")?;
    println!(
        "2/3 scored {:?}: {} tokens, sum log-prob {:.3} → {}",
        TEXT,
        row["num_tokens"],
        row["sum_logprob"].as_f64().unwrap_or(f64::NAN),
        scored.display()
    );

    println!("3/3 greedy continuation of \"the quick\" (random weights: expect noise):");
    super::generate::run(super::generate::Args {
        model,
        prompt: Some("the quick".into()),
        chat: None,
        system: None,
        max_new_tokens: 16,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        json: false,
    })
}
