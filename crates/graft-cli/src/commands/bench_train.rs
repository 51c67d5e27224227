//! `graft bench train|dpo`: optimizer steps (forward, loss, backward, clip, AdamW) of a random
//! Llama — or of --model's HF dir, LoRA on it with --lora-r, its base in NF4 with --nf4 — on
//! fixed ids; bench/train.sh and bench/qlora.sh run the same in PyTorch. `dpo` trains on
//! --batch preference pairs (chosen and rejected rows of --seq-len tokens, the second half of
//! each the response) with the sigmoid DPO loss, β = 0.1, and the reference log-probs cached
//! before the first step — as `graft train` does (TRL's `precompute_ref_log_probs`).

use anyhow::{bail, Result};
use serde_json::json;

use super::bench::{median, peak_rss_mib, Args};

/// Optimizer steps of `args.kind` (`train` or `dpo`) on fixed ids; bench/train.sh runs the same in
/// PyTorch.
pub(super) fn train(args: &Args) -> Result<()> {
    let dpo = args.kind == "dpo";
    let device = candle_core::Device::Cpu;
    let (cfg, weights, source) = base(args, &device)?;
    let varmap = candle_nn::VarMap::new();
    let mut model = build(args, &cfg, &weights, source.as_ref(), &varmap, &device)?;
    let params = match weights.is_empty() {
        true => weight_count(&mut model),
        false => weights.values().map(|t| t.elem_count()).sum(),
    };
    model.checkpointing = args.checkpointing;
    let model = graft_models::Model::from(model);
    let mut opt = graft_train::optim::AdamW::new(&varmap, 0.9, 0.95, 1e-8, 0.1)?;
    let objective = graft_train::objectives::registry::objective(&match dpo {
        true => json!({"kind": "dpo", "beta": 0.1}),
        false => json!({"kind": "lm"}),
    })
    .map_err(anyhow::Error::msg)?;
    let mut rows = train_rows(args, cfg.vocab_size, dpo);
    if dpo {
        // The starting policy is the reference (LoRA's B = 0).
        graft_train::reference::cache_reference(
            &mut rows,
            &model,
            args.batch.unwrap_or(4),
            &device,
            |_| (),
        )?;
    }
    let tokens: usize = rows
        .iter()
        .flat_map(|r| r.parts())
        .map(|r| r.input_ids.len())
        .sum();
    let batch = graft_train::batch::collate(&rows.iter().collect::<Vec<_>>(), &device)?;
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
            rates.push(tokens as f64 / start.elapsed().as_secs_f64());
        }
    }
    println!(
        "{}",
        json!({"bench": match (args.nf4, args.lora_r > 0, dpo) { (true, _, _) => "qlora-nf4", (_, true, true) => "dpo-lora", (_, false, true) => "dpo", (_, true, _) => "lora", _ => "train" }, "impl": "graft", "tokens": tokens, "checkpointing": args.checkpointing, "params": params, "lora_r": args.lora_r, "batch": args.batch.unwrap_or(4), "seq_len": args.seq_len,
        "threads": candle_core::utils::get_num_threads(), "tokens_per_second_median": median(rates.clone()), "runs": rates,
        "peak_rss_mib": peak_rss_mib()})
    );
    Ok(())
}

type Weights = std::collections::HashMap<String, candle_core::Tensor>;

/// The config and weights to train: --model's (NF4 with --nf4; full fine-tuning takes its
/// weights as variables, an adapter builds on the source), or a random Llama of --llama's size.
fn base(
    args: &Args,
    device: &candle_core::Device,
) -> Result<(
    graft_models::config::DecoderConfig,
    Weights,
    Option<graft_models::ModelSource>,
)> {
    Ok(match &args.model {
        // A real model (e.g. SmolLM2 converted to an HF dir), NF4 with --nf4.
        Some(path) => {
            let quantization = match args.nf4 {
                true if args.lora_r == 0 => {
                    bail!("--nf4: a quantized base trains an adapter; give --lora-r")
                }
                true => graft_models::Quantization::Nf4 { double_quant: true },
                false => graft_models::Quantization::None,
            };
            let source = graft_models::ModelSource::open_with(
                path,
                candle_core::DType::F32,
                device,
                quantization,
            )?;
            // Full fine-tuning takes the weights as variables; an adapter builds on the source.
            let weights = match args.lora_r {
                0 => source.tensors(candle_core::DType::F32)?,
                _ => Default::default(),
            };
            (source.decoder_config()?.clone(), weights, Some(source))
        }
        None => {
            let [hidden, layers, intermediate, vocab] = args.llama[..] else {
                bail!("--llama: give hidden,layers,intermediate,vocab")
            };
            let config = json!({"model_type": "llama", "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": intermediate,
            "num_hidden_layers": layers, "num_attention_heads": 8, "num_key_value_heads": 8, "rms_norm_eps": 1e-5,
            "tie_word_embeddings": true});
            let cfg =
                graft_models::registry::decoder_config(std::path::Path::new("bench"), &config)?;
            let weights = graft_models::init::init_weights(&cfg, 0.02, 0)?;
            (cfg, weights, None)
        }
    })
}

/// The model: every weight a variable (full fine-tuning), or LoRA on every linear layer of a
/// frozen base.
fn build(
    args: &Args,
    cfg: &graft_models::config::DecoderConfig,
    weights: &Weights,
    source: Option<&graft_models::ModelSource>,
    varmap: &candle_nn::VarMap,
    device: &candle_core::Device,
) -> Result<graft_models::Decoder> {
    let model = if args.lora_r == 0 {
        // Full fine-tuning: every weight a variable.
        let model = graft_models::Decoder::new(
            cfg,
            candle_nn::VarBuilder::from_varmap(varmap, candle_core::DType::F32, device),
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
        let mut model = match source {
            Some(s) => s.build(candle_core::DType::F32, device)?,
            None => graft_models::Decoder::new(
                cfg,
                candle_nn::VarBuilder::from_tensors(
                    weights.clone(),
                    candle_core::DType::F32,
                    device,
                ),
            )?,
        };
        let lora: graft_adapters::LoraConfig = serde_json::from_value(
            json!({"r": args.lora_r, "lora_alpha": 2 * args.lora_r, "target_modules": "all-linear"}),
        )?;
        graft_adapters::init_trainable(&mut model, &lora, varmap, 0)?;
        model
    };
    Ok(model)
}

/// Weights of a model built on a source: embeddings, head and linear layers (quantized or not).
fn weight_count(m: &mut graft_models::Decoder) -> usize {
    let linear: usize = graft_models::layers::linear::Linears::linears_mut(m)
        .iter()
        .map(|(_, l)| l.in_dim() * l.out_dim())
        .sum();
    let head = m.lm_head.as_ref().map_or(0, |h| h.elem_count());
    m.embed_tokens.elem_count() + head + linear
}

/// --batch rows of fixed ids (or DPO pairs).
fn train_rows(args: &Args, vocab: usize, dpo: bool) -> Vec<graft_data::rows::TrainRow> {
    // Row r's ids: a multiplicative hash of its token positions (the same in train_torch.py).
    let ids = |r: usize| -> Vec<u32> {
        (0..args.seq_len)
            .map(|i| (((r * args.seq_len + i) as u64 * 2_654_435_761) % vocab as u64) as u32)
            .collect()
    };
    (0..args.batch.unwrap_or(4))
        .map(|b| match dpo {
            // Pair b: chosen row 2b and rejected row 2b+1 with the chosen row's prompt half.
            true => {
                let half = args.seq_len / 2;
                let chosen = ids(2 * b);
                let mut rejected = ids(2 * b + 1);
                rejected[..half].copy_from_slice(&chosen[..half]);
                let targets: Vec<bool> = (0..args.seq_len).map(|i| i >= half).collect();
                graft_data::rows::TrainRow {
                    others: vec![graft_data::rows::TrainRow {
                        input_ids: rejected,
                        targets: targets.clone(),
                        ..Default::default()
                    }],
                    input_ids: chosen,
                    targets,
                    ..Default::default()
                }
            }
            false => graft_data::rows::TrainRow {
                input_ids: ids(b),
                targets: (0..args.seq_len).map(|i| i > 0).collect(),
                ..Default::default()
            },
        })
        .collect()
}
