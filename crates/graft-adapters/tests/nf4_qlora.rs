//! QLoRA on an NF4 base (bitsandbytes' 4-bit NormalFloat with double quantization, quantized at
//! load): every LoRA tensor gets a gradient through the 4-bit layers, and the adapted model's
//! log-probs equal the same adapter on the dense base holding the dequantized weights.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use graft_adapters::config::LoraConfig;
use graft_adapters::lora::init_trainable;
use graft_models::{next_token_logprobs, Decoder, ModelSource, Quantization};
use graft_testkit::{assert_close, fixture};

#[test]
fn lora_on_an_nf4_base_gets_every_gradient() {
    let path = fixture("models/llama_h64");
    let source = ModelSource::open_with(
        &path,
        DType::F32,
        &Device::Cpu,
        Quantization::Nf4 { double_quant: true },
    )
    .unwrap();
    assert_eq!(
        source.quantized.len(),
        14,
        "every decoder-layer linear is 4-bit"
    );
    let mut model = source.build(DType::F32, &Device::Cpu).unwrap();
    // The same weights, dense.
    let mut weights = source.tensors(DType::F32).unwrap();
    for (k, q) in &source.quantized {
        weights.insert(k.clone(), q.dequantize(&Device::Cpu).unwrap());
    }
    let vb = candle_nn::VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let mut dense = Decoder::new(source.decoder_config().unwrap(), vb).unwrap();

    let cfg: LoraConfig = serde_json::from_value(serde_json::json!({
        "r": 4, "lora_alpha": 8, "target_modules": "all-linear"
    }))
    .unwrap();
    let varmap = VarMap::new();
    let names = init_trainable(&mut model, &cfg, &varmap, 0).unwrap();
    assert_eq!(names.len(), 14);
    // B starts at 0 (A would get no gradient): give every B a value.
    for (k, v) in varmap.data().lock().unwrap().iter() {
        if k.contains("lora_B") {
            let r = Tensor::randn(0f32, 0.1, v.dims(), &Device::Cpu).unwrap();
            v.set(&r).unwrap();
        }
    }
    let dense_vars = VarMap::new();
    init_trainable(&mut dense, &cfg, &dense_vars, 0).unwrap();
    for (k, v) in dense_vars.data().lock().unwrap().iter() {
        v.set(varmap.data().lock().unwrap()[k].as_tensor()).unwrap();
    }

    let ids = Tensor::new(&[[1u32, 7, 30, 2, 55, 90, 12, 4]], &Device::Cpu).unwrap();
    let lp = model.log_probs(&ids, None, true).unwrap();
    assert_close!(
        lp,
        dense.log_probs(&ids, None, false).unwrap(),
        1e-5,
        "NF4 vs dense dequantized base"
    );
    let loss = next_token_logprobs(&lp, &ids)
        .unwrap()
        .mean_all()
        .unwrap()
        .neg()
        .unwrap();
    let grads = loss.backward().unwrap();
    for (key, var) in varmap.data().lock().unwrap().iter() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {key}"));
        let n = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(n > 0.0 && n.is_finite(), "{key}: {n}");
    }
}
