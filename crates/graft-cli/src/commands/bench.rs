//! `graft bench`: throughput of scoring (batched full-sequence forward) and KV-cached decoding, median
//! of several runs after a warm-up. Compare with PyTorch using bench/score_decode.sh.

use anyhow::{bail, Result};
use candle_core::Tensor;
use graft_serve::{generate, GenerateOptions};
use serde_json::json;

use crate::io::ModelArgs;

#[derive(clap::Args, Debug)]
#[command(
    about = "Measure score/decode throughput of a model, or full fine-tuning throughput and peak RSS (train)",
    after_help = "Example:\n  graft bench score --model SmolLM2-135M-Instruct.Q8_0.gguf --batch 4 --seq-len 256\n  graft bench decode --model SmolLM2-135M-Instruct.Q8_0.gguf --new-tokens 64"
)]
pub struct Args {
    /// What to measure: score, decode, or train (a random Llama; --model is ignored).
    pub kind: String,
    /// HF directory or .gguf file (score, decode).
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Rows per scoring batch.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Tokens per row (score) or prompt tokens (decode).
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// New tokens per decode run (EOS ignored).
    #[arg(long, default_value_t = 64)]
    pub new_tokens: usize,
    /// Timed runs after one warm-up.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// `train` only: LoRA rank on every linear layer of a frozen base (0 = full fine-tuning).
    #[arg(long, default_value_t = 0)]
    pub lora_r: usize,
    /// `train` only: the size of the random Llama (hidden, layers, intermediate, vocab; 8 heads).
    #[arg(long, value_delimiter = ',', default_value = "512,8,1536,8192")]
    pub llama: Vec<usize>,
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.unwrap_or(0.0) / 1024.0
}

/// Full fine-tuning steps (forward, LM loss, backward, clip, AdamW) of a random Llama on random ids;
/// bench/train.sh runs the same in PyTorch.
fn train(args: &Args) -> Result<()> {
    let [hidden, layers, intermediate, vocab] = args.llama[..] else {
        bail!("--llama: give hidden,layers,intermediate,vocab")
    };
    let config = json!({"model_type": "llama", "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": intermediate,
        "num_hidden_layers": layers, "num_attention_heads": 8, "num_key_value_heads": 8, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": true});
    let cfg = graft_models::registry::decoder_config(std::path::Path::new("bench"), &config)?;
    let weights = graft_models::init::init_weights(&cfg, 0.02, 0)?;
    let device = candle_core::Device::Cpu;
    let varmap = candle_nn::VarMap::new();
    let model = if args.lora_r == 0 {
        // Full fine-tuning: every weight a variable.
        let model = graft_models::Decoder::new(
            &cfg,
            candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &device),
        )?;
        for (name, var) in varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("varmap poisoned"))?
            .iter()
        {
            var.set(&weights[name])?;
        }
        model
    } else {
        // LoRA on every linear layer of a frozen base.
        let vb =
            candle_nn::VarBuilder::from_tensors(weights.clone(), candle_core::DType::F32, &device);
        let mut model = graft_models::Decoder::new(&cfg, vb)?;
        let lora: graft_adapters::LoraConfig = serde_json::from_value(
            json!({"r": args.lora_r, "lora_alpha": 2 * args.lora_r, "target_modules": "all-linear"}),
        )?;
        graft_adapters::init_trainable(&mut model, &lora, &varmap, 0)?;
        model
    };
    let model = graft_train::Net::from(model);
    let mut opt = graft_train::optim::AdamW::new(&varmap, 0.9, 0.95, 1e-8, 0.1)?;
    let objective = graft_train::objectives::registry::objective(&json!({"kind": "lm"}))
        .map_err(anyhow::Error::msg)?;
    let rows: Vec<graft_train::data::TrainRow> = (0..args.batch)
        .map(|b| graft_train::data::TrainRow {
            input_ids: (0..args.seq_len)
                .map(|i| (((b * args.seq_len + i) as u64 * 2_654_435_761) % vocab as u64) as u32)
                .collect(),
            targets: (0..args.seq_len).map(|i| i > 0).collect(),
            ..Default::default()
        })
        .collect();
    let batch = graft_train::data::collate(&rows.iter().collect::<Vec<_>>(), &device)?;
    let mut rates = Vec::new();
    for run in 0..=args.repeats {
        let start = std::time::Instant::now();
        graft_train::step::optimizer_step(
            &model,
            None,
            objective.as_ref(),
            &mut opt,
            std::slice::from_ref(&batch),
            1e-4,
            Some(1.0),
            |_| 0,
        )?;
        if run > 0 {
            rates.push((args.batch * args.seq_len) as f64 / start.elapsed().as_secs_f64());
        }
    }
    let params: usize = weights.values().map(|t| t.elem_count()).sum();
    println!(
        "{}",
        json!({"bench": if args.lora_r > 0 { "lora" } else { "train" }, "impl": "graft", "params": params, "lora_r": args.lora_r, "batch": args.batch, "seq_len": args.seq_len,
        "threads": candle_core::utils::get_num_threads(), "tokens_per_second_median": median(rates.clone()), "runs": rates,
        "peak_rss_mib": peak_rss_mib()})
    );
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(args: Args) -> Result<()> {
    if args.repeats == 0 || args.seq_len < 2 || args.batch == 0 {
        bail!("--repeats, --batch must be ≥ 1 and --seq-len ≥ 2");
    }
    if args.kind == "train" {
        return train(&args);
    }
    let Some(path) = args.model.clone() else {
        bail!("--model: required for `{}`", args.kind)
    };
    let model_args = ModelArgs {
        model: path,
        dtype: args.dtype.clone(),
        adapter: None,
        keep_quantized: false,
        nf4: false,
    };
    let (_, model, device) = model_args.load()?;
    let vocab = model.cfg.vocab_size as u32;
    // Deterministic pseudo-random ids, spread over the vocabulary.
    let ids: Vec<u32> = (0..args.batch * args.seq_len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) % vocab)
        .collect();
    let mut rates = Vec::new();
    for run in 0..=args.repeats {
        let start = std::time::Instant::now();
        let tokens = match args.kind.as_str() {
            "score" => {
                let t = Tensor::from_slice(&ids, (args.batch, args.seq_len), &device)?;
                model.log_probs(&t, None, false)?;
                args.batch * args.seq_len
            }
            "decode" => {
                let prompt = &ids[..args.seq_len];
                // Prefill is timed apart so the rate is decode-only.
                let opts = GenerateOptions {
                    max_new_tokens: 1,
                    temperature: 0.0,
                    top_p: 1.0,
                    seed: 0,
                    eos_token_ids: vec![],
                };
                let prefill = std::time::Instant::now();
                generate(&model, prompt, &opts, &device, |_| true)?;
                let prefill = prefill.elapsed();
                let opts = GenerateOptions {
                    max_new_tokens: args.new_tokens + 1,
                    ..opts
                };
                let all = std::time::Instant::now();
                generate(&model, prompt, &opts, &device, |_| true)?;
                let decode = all.elapsed().saturating_sub(prefill).as_secs_f64();
                if run > 0 {
                    rates.push(args.new_tokens as f64 / decode);
                }
                continue;
            }
            other => bail!("bench kind `{other}` is not known (score, decode)"),
        };
        if run > 0 {
            rates.push(tokens as f64 / start.elapsed().as_secs_f64());
        }
    }
    let m = median(rates.clone());
    let threads = candle_core::utils::get_num_threads();
    println!(
        "{}",
        json!({"bench": args.kind, "model": model_args.model, "batch": args.batch, "seq_len": args.seq_len,
               "new_tokens": args.new_tokens, "dtype": args.dtype, "threads": threads,
               "tokens_per_second_median": m, "runs": rates})
    );
    Ok(())
}
