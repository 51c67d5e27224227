//! LoRA inside the fused Llama block (graft-models' fused_block.rs, used in training while the
//! adapter's tensors are declared trainable) against the composed block with the LoRA op:
//! logits and the gradients of every A and B to 1e-5 of their scale — on a frozen dense base with
//! GQA (6 query heads on 2 kv heads) and LoRA on some projections only, and on an NF4 base
//! (QLoRA).

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use graft_models::layers::side_grads::{set_trainable, take_side_grads};
use graft_models::{Decoder, ModelSource, Quantization};
use serde_json::json;

/// Attaches `lora` (B given values, so A's gradient is not zero too) and checks the fused blocks
/// against the composed ones; `side` = the LoRA tensors whose gradients come from fused blocks.
fn compare(mut model: Decoder, lora: serde_json::Value, side: usize) -> Result<()> {
    let dev = Device::Cpu;
    let lora: graft_adapters::LoraConfig = serde_json::from_value(lora).unwrap();
    let varmap = VarMap::new();
    graft_adapters::init_trainable(&mut model, &lora, &varmap, 0).unwrap();
    let vars: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (name, var) in &vars {
        if name.contains("lora_B") {
            var.set(&Tensor::randn(0f32, 0.3, var.shape(), &dev)?)?;
        }
    }
    let vocab = model.cfg.vocab_size as u32;
    let ids: Vec<u32> = (0..18u32).map(|i| (i * 7 + 3) % vocab).collect();
    let ids = Tensor::from_vec(ids, (2, 9), &dev)?;
    let r = Tensor::randn(0f32, 1.0, (2, 9, vocab as usize), &dev)?;
    let run = |fused: bool| -> Result<(Tensor, Vec<Tensor>, usize)> {
        set_trainable(match fused {
            true => vars.iter().map(|(_, v)| v.id()).collect(),
            false => Vec::new(),
        });
        take_side_grads();
        let logits = model.forward(&ids, None, true)?;
        let store = (&logits * &r)?.sum_all()?.backward()?;
        let mut side = take_side_grads();
        let n_side = side.len();
        let grads = vars
            .iter()
            .map(|(name, v)| {
                store
                    .get(v.as_tensor())
                    .cloned()
                    .or_else(|| side.remove(&v.id()))
                    .unwrap_or_else(|| panic!("fused={fused} {name}: no gradient"))
            })
            .collect();
        set_trainable(Vec::new());
        Ok((logits, grads, n_side))
    };
    let (want_logits, want, _) = run(false)?;
    let (logits, got, n_side) = run(true)?;
    assert_eq!(n_side, side, "side gradients");
    let diff = graft_testkit::max_abs_diff(&logits, &want_logits);
    assert!(diff < 1e-5, "logits differ by {diff}");
    for ((name, _), (g, w)) in vars.iter().zip(got.iter().zip(&want)) {
        let scale = w.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(scale > 0.0, "{name}: zero gradient");
        let diff = graft_testkit::max_abs_diff(g, w);
        assert!(
            diff <= 1e-5 * scale.max(1.0),
            "∂{name} differs by {diff} (scale {scale})"
        );
    }
    Ok(())
}

#[test]
fn fused_lora_block_equals_composed() -> Result<()> {
    let err = |e: graft_models::ModelError| candle_core::Error::Msg(e.to_string());
    let config = json!({"model_type": "llama", "vocab_size": 40, "hidden_size": 36,
        "intermediate_size": 52, "num_hidden_layers": 2, "num_attention_heads": 6,
        "num_key_value_heads": 2, "head_dim": 6, "rms_norm_eps": 1e-5, "tie_word_embeddings": true});
    let cfg = graft_models::registry::decoder_config(std::path::Path::new("test"), &config)
        .map_err(err)?;
    let weights = graft_models::init::init_weights(&cfg, 0.2, 3).map_err(err)?;
    let model = Decoder::new(
        &cfg,
        VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu),
    )?;
    let lora = json!({"r": 4, "lora_alpha": 8,
        "target_modules": ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]});
    // 2 layers × 5 adapted projections × (A, B).
    compare(model, lora, 2 * 5 * 2)
}

#[test]
fn fused_qlora_block_equals_composed() -> Result<()> {
    let source = ModelSource::open_with(
        &graft_testkit::fixture("models/llama_h64"),
        DType::F32,
        &Device::Cpu,
        Quantization::Nf4 { double_quant: true },
    )
    .unwrap();
    let layers = source.decoder_config().unwrap().num_hidden_layers();
    let model = source.build(DType::F32, &Device::Cpu).unwrap();
    let lora = json!({"r": 4, "lora_alpha": 8, "target_modules": "all-linear"});
    compare(model, lora, layers * 7 * 2)
}
