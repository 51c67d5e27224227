//! Model references beyond HF folders: a GGUF file (dequantized), mergekit's `BASE+ADAPTER`
//! (the LoRA merged as PEFT's merge_and_unload: tests/fixtures/adapters/lora_qv, peft 0.21.2),
//! PEFT adapter folders averaged into an adapter; and sharded output.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use graft_merge::{run, MergeConfig, Options};
use graft_models::ModelSource;
use graft_testkit::{fixture, json_tensor, max_abs_diff, read_json};

fn opts() -> Options {
    Options {
        seed: 0,
        shard_bytes: 5_000_000_000,
        base_dir: fixture("."),
    }
}

fn load(dir: &Path) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "safetensors") {
            out.extend(candle_core::safetensors::load(e.path(), &Device::Cpu).unwrap());
        }
    }
    out
}

fn merge(yaml: &str, out: &Path) {
    run(&MergeConfig::parse(yaml).unwrap(), out, &opts(), |_, _| {}).unwrap();
}

#[test]
fn a_gguf_input_merges_like_its_hf_twin() {
    // models/llama.gguf holds models/llama's weights (F32): their average is the model itself.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    merge(
        "models:\n  - {model: models/llama, parameters: {weight: 0.5}}\n  - {model: models/llama.gguf, parameters: {weight: 0.5}}\nmerge_method: linear\n",
        &out,
    );
    let (got, want) = (load(&out), load(&fixture("models/llama")));
    assert_eq!(got.len(), want.len());
    for (k, w) in &want {
        assert!(max_abs_diff(&got[k], w) < 1e-6, "{k}");
    }
    // A GGUF donor's rebuilt tokenizer goes with the output.
    let gguf_first = tmp.path().join("g");
    merge(
        "models:\n  - {model: models/llama.gguf, parameters: {weight: 1.0}}\nmerge_method: linear\n",
        &gguf_first,
    );
    assert!(gguf_first.join("tokenizer.json").exists());
}

#[test]
fn base_plus_lora_is_pefts_merge_and_unload() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    merge(
        "models:\n  - model: models/llama+adapters/lora_qv\nmerge_method: passthrough\n",
        &out,
    );
    let expected = read_json("adapters/lora_qv/expected.json");
    let got = load(&out);
    let (v, shape) = json_tensor(&expected["merged_q_proj_layer0"]);
    let want = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
    assert!(max_abs_diff(&got["model.layers.0.self_attn.q_proj.weight"], &want) < 1e-5);
    // The merged model scores as PEFT's adapter model.
    let source = ModelSource::open(&out, DType::F32, &Device::Cpu).unwrap();
    let model = source.build(DType::F32, &Device::Cpu).unwrap();
    let rows: Vec<Vec<u32>> = expected["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    let ids = Tensor::new(rows, &Device::Cpu).unwrap();
    let lp = model.log_probs(&ids, None, false).unwrap();
    let (v, shape) = json_tensor(&expected["logprobs"]);
    let want = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
    assert!(
        max_abs_diff(&lp, &want) < 1e-4,
        "{}",
        max_abs_diff(&lp, &want)
    );
}

#[test]
fn adapters_average_into_an_adapter() {
    // lora_qv and a copy with every tensor ×3, averaged: ×2, written as a PEFT adapter folder.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("lora3");
    std::fs::create_dir_all(&copy).unwrap();
    let src = fixture("adapters/lora_qv");
    std::fs::copy(
        src.join("adapter_config.json"),
        copy.join("adapter_config.json"),
    )
    .unwrap();
    let orig = candle_core::safetensors::load(src.join("adapter_model.safetensors"), &Device::Cpu)
        .unwrap();
    let tripled: HashMap<String, Tensor> = orig
        .iter()
        .map(|(k, t)| (k.clone(), (t * 3.0).unwrap()))
        .collect();
    candle_core::safetensors::save(&tripled, copy.join("adapter_model.safetensors")).unwrap();
    let out = tmp.path().join("avg");
    merge(
        &format!(
            "models:\n  - {{model: adapters/lora_qv, parameters: {{weight: 0.5}}}}\n  - {{model: {}, parameters: {{weight: 0.5}}}}\nmerge_method: linear\n",
            copy.display()
        ),
        &out,
    );
    assert!(out.join("adapter_config.json").exists() && !out.join("config.json").exists());
    let got = candle_core::safetensors::load(out.join("adapter_model.safetensors"), &Device::Cpu)
        .unwrap();
    assert_eq!(got.len(), orig.len());
    for (k, t) in &orig {
        assert!(max_abs_diff(&got[k], &(t * 2.0).unwrap()) < 1e-6, "{k}");
    }
    let (cfg, _) = graft_adapters::peft_format::load(&out).unwrap();
    assert_eq!(cfg.r, 4);
}

#[test]
fn small_shards_are_indexed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let cfg = MergeConfig::parse(
        "models:\n  - {model: models/llama, parameters: {weight: 1.0}}\nmerge_method: linear\n",
    )
    .unwrap();
    let o = Options {
        shard_bytes: 40_000,
        ..opts()
    };
    run(&cfg, &out, &o, |_, _| {}).unwrap();
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let shards: std::collections::BTreeSet<&str> = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(shards.len() > 2, "{shards:?}");
    let (got, want) = (load(&out), load(&fixture("models/llama")));
    for (k, w) in &want {
        assert_eq!(max_abs_diff(&got[k], w), 0.0, "{k}");
    }
    // The sharded output loads as a model.
    ModelSource::open(&out, DType::F32, &Device::Cpu)
        .unwrap()
        .build(DType::F32, &Device::Cpu)
        .unwrap();
}

#[test]
fn different_architectures_do_not_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = MergeConfig::parse(
        "models:\n  - {model: models/llama, parameters: {weight: 0.5}}\n  - {model: models/qwen2, parameters: {weight: 0.5}}\nmerge_method: linear\n",
    )
    .unwrap();
    let e = run(&cfg, &tmp.path().join("m"), &opts(), |_, _| {})
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("models/qwen2") && e.contains("`qwen2`") && e.contains("`llama`"),
        "{e}"
    );
}

#[test]
fn a_required_parameter_must_be_given() {
    // mergekit 0.1.5 declares slerp's `t` with required=True: a config without it is refused.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let cfg = MergeConfig::parse(
        "models:\n  - model: models/llama\n  - model: models/llama\nmerge_method: slerp\nbase_model: models/llama\n",
    )
    .unwrap();
    let e = run(&cfg, &out, &opts(), |_, _| {})
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("parameter `t` is missing"), "{e}");
    assert!(!out.exists(), "nothing written");
}

#[test]
fn empty_model_and_slice_lists_are_errors() {
    for (yaml, needle) in [
        ("models: []\nmerge_method: linear\n", "`models`: empty"),
        ("slices: []\nmerge_method: linear\n", "`slices`: empty"),
        (
            "slices:\n  - sources: []\nmerge_method: passthrough\n",
            "`slices[0].sources`: empty",
        ),
    ] {
        let e = MergeConfig::parse(yaml).err().unwrap_or_default();
        assert!(e.contains(needle), "{yaml}: {e}");
    }
}
