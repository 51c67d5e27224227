//! LoRA, rsLoRA and DoRA against PEFT 0.21.2 (tools/fixtures/make_adapter_fixtures.py: adapters made
//! by `peft` on the tiny llama fixture with random A, B and magnitudes, saved with save_pretrained):
//! log-probs, loss, gradients of every adapter parameter, merge_and_unload, and the format both ways.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use graft_adapters::{attach, merged_weights, peft_format};
use graft_models::{next_token_logprobs, Decoder, ModelSource};
use graft_testkit::{assert_close, fixture, json_tensor, read_json};

const CASES: &[&str] = &["lora_qv", "rslora_all", "dora_qv", "lora_saved"];

fn base() -> Decoder {
    let source = ModelSource::open(&fixture("models/llama"), DType::F32, &Device::Cpu).unwrap();
    source.build(DType::F32, &Device::Cpu).unwrap()
}

fn tensor(v: &serde_json::Value) -> Tensor {
    let (values, shape) = json_tensor(v);
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

#[test]
fn adapters_match_peft() {
    for case in CASES {
        let expected = read_json(&format!("adapters/{case}/expected.json"));
        let (cfg, tensors) = peft_format::load(&fixture(&format!("adapters/{case}"))).unwrap();
        // Adapter weights as variables, to check their gradients.
        let vars: HashMap<String, Var> = tensors
            .iter()
            .map(|(k, t)| (k.clone(), Var::from_tensor(t).unwrap()))
            .collect();
        let as_tensors: HashMap<String, Tensor> = vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        let mut model = base();
        let wrapped = attach(&mut model, &cfg, &as_tensors).unwrap();
        let targeted: Vec<String> =
            serde_json::from_value(expected["targeted_modules"].clone()).unwrap();
        assert_eq!(wrapped.len(), targeted.len(), "{case}: wrapped modules");

        let rows: Vec<Vec<u32>> = serde_json::from_value(expected["input_ids"].clone()).unwrap();
        let ids = Tensor::new(rows, &Device::Cpu).unwrap();
        let lp = model.log_probs(&ids, None, true).unwrap();
        assert_close!(
            lp,
            tensor(&expected["logprobs"]),
            1e-4,
            "{case}: log-probs vs {}",
            expected["reference"]
        );
        let loss = next_token_logprobs(&lp, &ids)
            .unwrap()
            .mean_all()
            .unwrap()
            .neg()
            .unwrap();
        let l = loss.to_scalar::<f32>().unwrap() as f64;
        assert!(
            (l - expected["loss"].as_f64().unwrap()).abs() < 1e-5,
            "{case}: loss {l}"
        );
        let grads = loss.backward().unwrap();
        let want = expected["grads"].as_object().unwrap();
        assert_eq!(
            want.len(),
            vars.len(),
            "{case}: every saved tensor is trainable"
        );
        for (key, var) in &vars {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{case}: no gradient for {key}"));
            // ‖Δ‖ / ‖g‖: float32 noise is ~1e-6 here; a wrong scale, mask or norm would be O(1).
            let w = tensor(&want[key]);
            let diff = (g - &w)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .sqrt()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let norm = w
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .sqrt()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                diff <= 1e-4 * norm + 1e-7,
                "{case}: gradient of {key}: ‖Δ‖ {diff} vs ‖g‖ {norm}"
            );
        }

        // merge_and_unload: the merged q_proj of layer 0, and the merged model's log-probs.
        let merged = merged_weights(&mut model, &cfg.modules_to_save().unwrap()).unwrap();
        assert_close!(
            merged["model.layers.0.self_attn.q_proj.weight"],
            tensor(&expected["merged_q_proj_layer0"]),
            1e-6,
            "{case}: merged q_proj"
        );
        let lp = model.log_probs(&ids, None, false).unwrap();
        assert_close!(
            lp,
            tensor(&expected["logprobs"]),
            1e-4,
            "{case}: merged model log-probs"
        );
    }
}

#[test]
fn peft_format_round_trips() {
    for case in CASES {
        let dir = fixture(&format!("adapters/{case}"));
        let (cfg, tensors) = peft_format::load(&dir).unwrap();
        let out = tempfile::tempdir().unwrap();
        let path = out.path().join("adapter");
        peft_format::save(&path, &cfg, &tensors).unwrap();
        // Every field PEFT wrote survives (unknown ones included) and the tensors are the same.
        let theirs: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        let ours: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(path.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(theirs, ours, "{case}: adapter_config.json");
        let (_, back) = peft_format::load(&path).unwrap();
        assert_eq!(back.len(), tensors.len());
        for (k, t) in &tensors {
            assert_close!(back[k], t, 0.0, "{case}: {k}");
        }
        assert!(
            peft_format::save(&path, &cfg, &tensors).is_err(),
            "never overwrites"
        );
    }
}

#[test]
fn bad_adapters_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("adapters/lora_qv");
    std::fs::copy(
        src.join("adapter_config.json"),
        dir.path().join("adapter_config.json"),
    )
    .unwrap();
    let e = graft_adapters::load_onto(&mut base(), dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("adapter_model.safetensors") && e.contains("missing"),
        "{e}"
    );

    std::fs::write(dir.path().join("adapter_model.safetensors"), b"garbage").unwrap();
    let e = graft_adapters::load_onto(&mut base(), dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("adapter_model.safetensors"), "{e}");

    // An adapter for another model shape.
    let (cfg, mut tensors) = peft_format::load(&src).unwrap();
    let key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight".to_string();
    tensors.insert(
        key.clone(),
        Tensor::zeros((4, 7), DType::F32, &Device::Cpu).unwrap(),
    );
    let e = attach(&mut base(), &cfg, &tensors).unwrap_err().to_string();
    assert!(e.contains(&key) && e.contains("shape"), "{e}");
    let mut cfg2 = cfg.clone();
    cfg2.target_modules = Some(serde_json::json!(["nonexistent_proj"]));
    let e = attach(&mut base(), &cfg2, &tensors)
        .unwrap_err()
        .to_string();
    assert!(e.contains("matches no layer"), "{e}");
}

#[test]
fn lora_on_a_quantized_base_trains_every_layer() {
    // QLoRA-style: the tiny llama's Q8_0 GGUF kept quantized, PEFT's rsLoRA weights on every linear
    // of layers 0 and 2; every adapter tensor gets a gradient through the quantized layers, and the
    // log-probs equal the same adapter on the dequantized base.
    let path = fixture("models/llama-q8_0.gguf");
    let (cfg, tensors) = peft_format::load(&fixture("adapters/rslora_all")).unwrap();
    let vars: HashMap<String, Var> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), Var::from_tensor(t).unwrap()))
        .collect();
    let as_tensors: HashMap<String, Tensor> = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let mut quantized = ModelSource::open_with(
        &path,
        DType::F32,
        &Device::Cpu,
        graft_models::Quantization::Stored,
    )
    .unwrap()
    .build(DType::F32, &Device::Cpu)
    .unwrap();
    let mut dense = ModelSource::open(&path, DType::F32, &Device::Cpu)
        .unwrap()
        .build(DType::F32, &Device::Cpu)
        .unwrap();
    attach(&mut quantized, &cfg, &as_tensors).unwrap();
    attach(&mut dense, &cfg, &tensors).unwrap();
    let ids = Tensor::new(&[[1u32, 7, 30, 2, 55, 90, 12, 4]], &Device::Cpu).unwrap();
    let lp = quantized.log_probs(&ids, None, true).unwrap();
    assert_close!(
        lp,
        dense.log_probs(&ids, None, false).unwrap(),
        1e-4,
        "quantized vs dequantized base"
    );
    let loss = next_token_logprobs(&lp, &ids)
        .unwrap()
        .mean_all()
        .unwrap()
        .neg()
        .unwrap();
    let grads = loss.backward().unwrap();
    for (key, var) in &vars {
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
