//! `graft quickstart`: the embedded default main job, no downloads, no arguments. From text bundled
//! in the binary (four Jane Austen novels, public domain; a small generated chat set — see
//! data/README.md) it trains a byte-level BPE tokenizer, initialises a small Llama, pretrains it,
//! fine-tunes it on chat, and asks it a few questions.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use graft_models::{registry, save::save_hf_dir};
use graft_train::{recipe, train, TrainOptions};
use serde_json::json;

use crate::io::{spinner, write_atomic};

const AUSTEN: &str = include_str!("../../../../data/pretrain/austen.txt");
const AUSTEN_EVAL: &str = include_str!("../../../../data/pretrain/austen.eval.txt");
const CHAT: &str = include_str!("../../../../data/chat/quickstart.jsonl");
const CHAT_EVAL: &str = include_str!("../../../../data/chat/quickstart.eval.jsonl");
const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
/// Marks a folder as quickstart output, so a rerun may replace it.
const MARKER: &str = ".graft-quickstart";

#[derive(clap::Args, Debug)]
#[command(
    about = "The embedded default: tokenizer + small Llama from bundled text, pretrain, chat fine-tune, generate (no download)",
    after_help = "Example:\n  cargo run --release -- quickstart\n  graft quickstart --output runs/qs --pretrain-steps 600"
)]
pub struct Args {
    #[arg(long, default_value = "runs/quickstart")]
    pub output: PathBuf,
    #[arg(long, default_value_t = 250)]
    pub pretrain_steps: usize,
    #[arg(long, default_value_t = 150)]
    pub sft_steps: usize,
    #[arg(long, default_value_t = 4096)]
    pub vocab_size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Paragraphs cut into rows of at most `max` characters, at sentence ends where possible.
fn text_rows(text: &str, max: usize) -> String {
    let mut out = String::new();
    for para in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        let mut rest = para;
        while !rest.is_empty() {
            let mut cut = rest.len().min(max);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            if cut < rest.len() {
                cut = rest[..cut].rfind(". ").map_or(cut, |i| i + 1);
            }
            out.push_str(&json!({ "text": rest[..cut].trim() }).to_string());
            out.push('\n');
            rest = rest[cut..].trim_start();
        }
    }
    out
}

fn write(path: &Path, text: &str) -> Result<()> {
    write_atomic(path, text.as_bytes())
}

/// Tokenizer files and a fresh small Llama, written as an HF directory.
fn build_base(dir: &Path, args: &Args) -> Result<()> {
    let chat_text = CHAT.lines().map(str::to_string);
    let texts = AUSTEN.split("\n\n").map(str::to_string).chain(chat_text);
    let tokenizer =
        graft_data::tokenizer_train::train_byte_level_bpe(texts, args.vocab_size, &SPECIALS)?;
    let vocab = tokenizer.get_vocab_size(true);
    let config = json!({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": vocab,
        "hidden_size": 192, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 6,
        "num_key_value_heads": 2, "head_dim": 32, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "max_position_embeddings": 512, "tie_word_embeddings": true, "initializer_range": 0.02,
        "bos_token_id": null, "eos_token_id": [0, 2], "hidden_act": "silu",
    });
    let cfg = registry::decoder_config(&dir.join("config.json"), &config)?;
    let weights = graft_models::init::init_weights(&cfg, 0.02, args.seed)?;
    let tok_config = json!({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": SPECIALS[0],
        "pad_token": SPECIALS[0], "chat_template": CHATML});
    let files = [
        (
            "tokenizer.json",
            tokenizer
                .to_string(true)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        (
            "tokenizer_config.json",
            serde_json::to_string_pretty(&tok_config)?,
        ),
        (
            "generation_config.json",
            serde_json::to_string_pretty(&json!({"eos_token_id": [0, 2]}))?,
        ),
    ];
    save_hf_dir(dir, &config, &weights, &files, false)?;
    let params: usize = weights.values().map(|t| t.elem_count()).sum();
    println!(
        "      vocabulary {vocab} tokens; Llama with {:.2}M parameters",
        params as f64 / 1e6
    );
    Ok(())
}

fn run_recipe(out: &Path, name: &str, text: &str) -> Result<graft_train::TrainSummary> {
    let path = out.join(format!("{name}.toml"));
    write(&path, text)?;
    let recipe = recipe::load(&path, &[]).map_err(anyhow::Error::msg)?;
    let s = train(
        &recipe,
        &TrainOptions {
            output: out.join(name),
            resume: false,
            progress: true,
        },
    )
    .with_context(|| format!("{name} run"))?;
    println!(
        "      loss {:.3} → {:.3}{}; plot {}",
        s.first_loss.unwrap_or(f64::NAN),
        s.last_loss.unwrap_or(f64::NAN),
        s.final_eval_loss
            .map(|e| format!(", eval loss {e:.3}"))
            .unwrap_or_default(),
        out.join(name).join("loss.png").display()
    );
    Ok(s)
}

pub fn run(args: Args) -> Result<()> {
    let out = &args.output;
    if out.exists() {
        if !out.join(MARKER).exists() {
            bail!(
                "{}: exists and is not a quickstart folder; choose another --output",
                out.display()
            );
        }
        std::fs::remove_dir_all(out).with_context(|| format!("{}: cannot clear", out.display()))?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    write(&out.join(MARKER), "")?;
    let data = out.join("data");
    write(&data.join("pretrain.jsonl"), &text_rows(AUSTEN, 1000))?;
    write(
        &data.join("pretrain.eval.jsonl"),
        &text_rows(AUSTEN_EVAL, 1000),
    )?;
    write(&data.join("chat.jsonl"), CHAT)?;
    write(&data.join("chat.eval.jsonl"), CHAT_EVAL)?;
    println!(
        "1/5 bundled data → {} (Austen novels, 2.6 MB; 488 chat rows)",
        data.display()
    );

    println!("2/5 training a byte-level BPE tokenizer and initialising a small Llama");
    let s = spinner("tokenizer");
    build_base(&out.join("base"), &args)?;
    s.finish_and_clear();

    println!(
        "3/5 pretraining on the novels ({} steps)",
        args.pretrain_steps
    );
    let pretrain = format!(
        "[model]\npath = \"base\"\n[data]\ntrain = \"data/pretrain.jsonl\"\neval = \"data/pretrain.eval.jsonl\"\nmax_seq_len = 256\npacking = true\n\
         [objective]\nkind = \"lm\"\n[train]\nsteps = {}\nbatch_size = 8\nlr = 3e-3\nschedule = \"wsd\"\nwarmup_steps = {}\n\
         decay_fraction = 0.2\nweight_decay = 0.1\nbeta2 = 0.95\nseed = {}\nlog_every = 5\neval_every = 50\nsave_every = 100\nkeep_last = 1\n",
        args.pretrain_steps,
        args.pretrain_steps.min(20),
        args.seed
    );
    run_recipe(out, "pretrain", &pretrain)?;

    println!(
        "4/5 chat fine-tuning, loss on assistant turns only ({} steps)",
        args.sft_steps
    );
    let sft = format!(
        "[model]\npath = \"pretrain/final\"\n[data]\ntrain = \"data/chat.jsonl\"\neval = \"data/chat.eval.jsonl\"\nmax_seq_len = 128\npacking = true\n\
         [objective]\nkind = \"sft\"\n[train]\nsteps = {}\nbatch_size = 8\nlr = 1e-3\nschedule = \"cosine\"\nwarmup_steps = {}\n\
         seed = {}\nlog_every = 5\neval_every = 50\nsave_every = 100\nkeep_last = 1\n",
        args.sft_steps,
        args.sft_steps.min(10),
        args.seed
    );
    run_recipe(out, "sft", &sft)?;

    println!("5/5 asking the fine-tuned model (greedy):");
    let model = crate::io::ModelArgs {
        model: out.join("sft/final"),
        dtype: "f32".into(),
        adapter: None,
        keep_quantized: false,
        dequantize: false,
        f32_activations: false,
        nf4: false,
    };
    for question in [
        "Who is the author of Emma?",
        "What is 3 plus 4?",
        "Repeat after me: It was a fine morning.",
    ] {
        print!("  user: {question}\n  model: ");
        super::generate::run(super::generate::Args {
            model: model.clone(),
            prompt: None,
            chat: Some(question.into()),
            input: None,
            samples: 1,
            output: None,
            system: None,
            max_new_tokens: 24,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: false,
            json: false,
        })?;
    }
    println!(
        "\nmodel: {}\nplots: {} {}\nmanifests: {} {}",
        out.join("sft/final").display(),
        out.join("pretrain/loss.png").display(),
        out.join("sft/loss.png").display(),
        out.join("pretrain/manifest.json").display(),
        out.join("sft/manifest.json").display()
    );
    Ok(())
}
