//! `graft init-model`: a fresh model to pretrain from scratch — a byte-level BPE tokenizer learned
//! from text files and randomly initialised weights (transformers' init) for a config.json of any
//! supported family. For T5 the tokenizer follows T5's conventions: <pad> = 0, </s> = 1, <unk> = 2,
//! sentinels <extra_id_0> … numbered down from the last id, and EOS appended to every encoding.

use std::path::PathBuf;

use anyhow::{Context, Result};
use graft_models::{registry, save::save_hf_dir};
use serde_json::{json, Value};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::AddedToken;

use crate::io::spinner;

#[derive(clap::Args, Debug)]
#[command(
    about = "A fresh model to pretrain: BPE tokenizer learned from text + random weights for a config.json",
    after_help = "Example:\n  graft init-model --config recipes/t5-tiny.config.json --text data/pretrain/austen.txt \\\n    --vocab-size 4000 --output runs/t5-tiny/init"
)]
pub struct Args {
    /// An HF config.json (vocab_size and special-token ids are filled in from the tokenizer).
    #[arg(long)]
    pub config: PathBuf,
    /// Text to learn the tokenizer from (.txt, JSONL or Parquet with a `text` field); repeatable.
    #[arg(long, required = true)]
    pub text: Vec<PathBuf>,
    #[arg(long, default_value_t = 4000)]
    pub vocab_size: usize,
    /// Sentinel tokens <extra_id_N> for span corruption / UL2 (default: 100 for T5, 0 otherwise).
    #[arg(long)]
    pub sentinels: Option<usize>,
    #[arg(long)]
    pub output: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("{}: cannot read", args.config.display()))?;
    let mut config: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: invalid JSON", args.config.display()))?;
    {
        // Placeholders until the tokenizer exists (the config is validated now, before training it).
        let obj = config
            .as_object_mut()
            .with_context(|| format!("{}: not a JSON object", args.config.display()))?;
        obj.entry("vocab_size").or_insert(json!(args.vocab_size));
        obj.entry("decoder_start_token_id").or_insert(json!(0));
    }
    let is_t5 = registry::is_seq2seq(&args.config, &config)?;
    let spinner = spinner("learning the tokenizer");
    let mut texts = Vec::new();
    for path in &args.text {
        for (line, row) in graft_data::source::read_rows(path).map_err(anyhow::Error::msg)? {
            let t = row.get("text").and_then(Value::as_str).with_context(|| {
                format!(
                    "{}:{line}: field `text`: missing or not a string",
                    path.display()
                )
            })?;
            texts.push(t.to_string());
        }
    }
    let specials: &[&str] = if is_t5 {
        &["<pad>", "</s>", "<unk>"]
    } else {
        &["<|endoftext|>"]
    };
    let sentinels = args.sentinels.unwrap_or(if is_t5 { 100 } else { 0 });
    let mut tokenizer = graft_data::tokenizer_train::train_byte_level_bpe(
        texts.into_iter(),
        args.vocab_size.saturating_sub(sentinels),
        specials,
    )?;
    let added: Vec<AddedToken> = (0..sentinels)
        .rev()
        .map(|i| AddedToken::from(format!("<extra_id_{i}>"), true))
        .collect();
    tokenizer
        .add_special_tokens(added)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let eos = specials[if is_t5 { 1 } else { 0 }];
    let eos_id = tokenizer
        .token_to_id(eos)
        .context("the tokenizer lost its EOS")?;
    if is_t5 {
        let post = TemplateProcessing::builder()
            .try_single("$A </s>")
            .and_then(|b| b.try_pair("$A </s> $B </s>"))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .special_tokens(vec![("</s>", eos_id)])
            .build()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tokenizer.with_post_processor(Some(post));
    }
    let vocab = tokenizer.get_vocab_size(true);
    let obj = config
        .as_object_mut()
        .with_context(|| format!("{}: not a JSON object", args.config.display()))?;
    obj.insert("vocab_size".into(), json!(vocab));
    obj.insert("eos_token_id".into(), json!(eos_id));
    if is_t5 {
        obj.insert("pad_token_id".into(), json!(0));
    } else {
        obj.remove("decoder_start_token_id");
    }
    spinner.set_message("initialising the weights");
    let weights = graft_models::init::init_model_weights(&args.config, &config, args.seed)?;
    let mut tok_config = json!({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos, "pad_token": specials[0]});
    if is_t5 {
        tok_config["unk_token"] = json!("<unk>");
    }
    let tokenizer_json = tokenizer
        .to_string(true)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let files = [
        ("tokenizer.json", tokenizer_json),
        (
            "tokenizer_config.json",
            serde_json::to_string_pretty(&tok_config)?,
        ),
    ];
    save_hf_dir(&args.output, &config, &weights, &files, crate::io::force())?;
    spinner.finish_and_clear();
    let params: usize = weights.values().map(|t| t.elem_count()).sum();
    println!(
        "wrote {}: {} model, {:.2}M parameters, vocabulary {vocab} ({sentinels} sentinels)",
        args.output.display(),
        config["model_type"].as_str().unwrap_or("?"),
        params as f64 / 1e6
    );
    Ok(())
}
