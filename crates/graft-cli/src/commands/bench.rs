//! `graft bench`: throughput of scoring (batched full-sequence forward) and KV-cached decoding, median
//! of several runs after a warm-up. Compare with PyTorch using bench/score_decode.sh.

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use graft_models::Model;
use graft_serve::{generate, generate_batch, GenerateOptions};
use serde_json::json;

use crate::io::ModelArgs;

#[derive(clap::Args, Debug)]
#[command(
    about = "Measure score/decode throughput of a model, or training throughput and peak RSS (train: LM loss, dpo: preference pairs)",
    after_help = "Example:\n  graft bench score --model SmolLM2-135M-Instruct.Q8_0.gguf --batch 4 --seq-len 256\n  graft bench decode --model SmolLM2-135M-Instruct.Q8_0.gguf --new-tokens 64"
)]
pub struct Args {
    /// What to measure: score, prefill, decode, train, lora (train with --lora-r 16) or dpo (a random Llama,
    /// or --model's HF dir).
    pub kind: String,
    /// HF directory or .gguf file (score, prefill, decode).
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Rows per scoring or training batch (default 4); sequences decoded together (default 1).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Tokens per row (score) or prompt tokens (decode).
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// New tokens per decode run (EOS ignored).
    #[arg(long, default_value_t = 64)]
    pub new_tokens: usize,
    /// Timed runs after one warm-up.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// `train`, `dpo`: LoRA rank on every linear layer of a frozen base (0 = full fine-tuning).
    #[arg(long, default_value_t = 0)]
    pub lora_r: usize,
    /// `train`, `dpo`: the size of the random Llama (hidden, layers, intermediate, vocab; 8 heads).
    #[arg(long, value_delimiter = ',', default_value = "512,8,1536,8192")]
    pub llama: Vec<usize>,
    /// score, prefill, decode: kept for scripts (a GGUF file's weights stay quantized by default).
    #[arg(long, conflicts_with = "dequantize")]
    pub keep_quantized: bool,
    /// score, prefill, decode: dequantize a GGUF file's weights to --dtype when loading.
    #[arg(long)]
    pub dequantize: bool,
    /// `train` with --model (an HF dir) and --lora-r: the frozen base quantized to NF4 (QLoRA).
    #[arg(long)]
    pub nf4: bool,
    /// `train`: activation checkpointing of every block.
    #[arg(long)]
    pub checkpointing: bool,
}

/// Peak resident memory of this process (VmHWM), in MiB.
pub(super) fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.unwrap_or(0.0) / 1024.0
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(args: Args) -> Result<()> {
    if args.repeats == 0 || args.seq_len < 2 || args.batch == Some(0) {
        bail!("--repeats, --batch must be ≥ 1 and --seq-len ≥ 2");
    }
    if args.kind == "lora" {
        // `lora` = `train` with an adapter (rank 16 unless --lora-r says otherwise).
        let lora_r = if args.lora_r == 0 { 16 } else { args.lora_r };
        return super::bench_train::train(&Args {
            kind: "train".into(),
            lora_r,
            ..args
        });
    }
    if args.kind == "train" || args.kind == "dpo" {
        return super::bench_train::train(&args);
    }
    let Some(path) = args.model.clone() else {
        bail!("--model: required for `{}`", args.kind)
    };
    let model_args = ModelArgs {
        model: path,
        dtype: args.dtype.clone(),
        adapter: None,
        keep_quantized: args.keep_quantized,
        dequantize: args.dequantize,
        f32_activations: false,
        nf4: false,
    };
    let (_, decoder, device) = model_args.load()?;
    let vocab = decoder.cfg.vocab_size as u32;
    let model = graft_models::Model::from(decoder);
    // Deterministic pseudo-random ids, spread over the vocabulary.
    let batch = args
        .batch
        .unwrap_or(if args.kind == "score" { 4 } else { 1 });
    let ids: Vec<u32> = (0..batch * args.seq_len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) % vocab)
        .collect();
    let mut rates = Vec::new();
    for run in 0..=args.repeats {
        let r = match args.kind.as_str() {
            "score" => score_rate(&model, &ids, batch, args.seq_len, &device)?,
            "prefill" => prefill_rate(&model, &ids[..args.seq_len], &device)?,
            "decode" if batch > 1 => batch_decode_rate(
                &model,
                &ids[..args.seq_len],
                batch,
                args.new_tokens,
                &device,
            )?,
            "decode" => decode_rate(&model, &ids[..args.seq_len], args.new_tokens, &device)?,
            other => bail!(
                "bench kind `{other}` is not known (score, prefill, decode, train, lora, dpo)"
            ),
        };
        // The first run warms up.
        if run > 0 {
            rates.push(r);
        }
    }
    let m = median(rates.clone());
    let threads = candle_core::utils::get_num_threads();
    println!(
        "{}",
        json!({"bench": args.kind, "model": model_args.model, "batch": batch, "seq_len": args.seq_len,
               "new_tokens": args.new_tokens, "dtype": args.dtype, "keep_quantized": !args.dequantize && !model_args.model.is_dir(), "threads": threads,
               "tokens_per_second_median": m, "runs": rates, "peak_rss_mib": peak_rss_mib()})
    );
    Ok(())
}

fn greedy(max_new_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        eos_token_ids: vec![],
    }
}

/// Log-probs at every position of `batch` rows of `seq_len` tokens: tokens/s.
fn score_rate(
    model: &Model,
    ids: &[u32],
    batch: usize,
    seq_len: usize,
    device: &Device,
) -> Result<f64> {
    let start = std::time::Instant::now();
    let t = Tensor::from_slice(ids, (batch, seq_len), device)?;
    if let Some(d) = model.as_decoder() {
        d.log_probs(&t, None, false)?;
    }
    Ok((batch * seq_len) as f64 / start.elapsed().as_secs_f64())
}

/// The prompt's forward pass and the first token, as generation runs it (llama-bench's pp).
fn prefill_rate(model: &Model, prompt: &[u32], device: &Device) -> Result<f64> {
    let start = std::time::Instant::now();
    generate(model, prompt, &greedy(1), device, |_| true)?;
    Ok(prompt.len() as f64 / start.elapsed().as_secs_f64())
}

/// Decode steps only: timed from the first new token (prefill done) to the last.
fn decode_rate(model: &Model, prompt: &[u32], new_tokens: usize, device: &Device) -> Result<f64> {
    let mut first = None;
    generate(model, prompt, &greedy(new_tokens + 1), device, |_| {
        first.get_or_insert_with(std::time::Instant::now);
        true
    })?;
    let decode = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    Ok(new_tokens as f64 / decode)
}

/// `batch` sequences of one prompt (one prefill) decoded together, timed without the prefill:
/// tokens/s of all of them.
fn batch_decode_rate(
    model: &Model,
    prompt: &[u32],
    batch: usize,
    new_tokens: usize,
    device: &Device,
) -> Result<f64> {
    let prompts = vec![prompt; batch];
    let start = std::time::Instant::now();
    generate_batch(model, &prompts, &vec![greedy(1); batch], device)?;
    let prefill = start.elapsed();
    let start = std::time::Instant::now();
    generate_batch(
        model,
        &prompts,
        &vec![greedy(new_tokens + 1); batch],
        device,
    )?;
    let decode = start.elapsed().saturating_sub(prefill).as_secs_f64();
    Ok((batch * new_tokens) as f64 / decode)
}
