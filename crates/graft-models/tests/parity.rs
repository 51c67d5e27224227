//! Parity with transformers on tiny random checkpoints of every family (fixtures made by
//! tools/fixtures/make_decoder_fixtures.py: transformers' eager forward in float32, seed 0), plus the
//! KV-cache and gradient contracts of the decoder.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use graft_models::{next_token_logprobs, Decoder, ModelSource};
use graft_testkit::{assert_close, fixture, json_tensor, read_json};

const FAMILIES: &[&str] = &[
    "llama",
    "llama3_tied",
    "mistral",
    "qwen2",
    "gemma",
    "gemma2",
    "gemma3_text",
    "olmo2",
];

fn load(name: &str) -> (ModelSource, Decoder) {
    let dir = fixture(&format!("models/{name}"));
    let source = ModelSource::open(&dir, DType::F32, &Device::Cpu).unwrap();
    let model = source.build(DType::F32, &Device::Cpu).unwrap();
    (source, model)
}

/// Opens and builds the model at `path` (HF dir or GGUF) in f32.
fn open(path: &std::path::Path) -> Decoder {
    let source = ModelSource::open(path, DType::F32, &Device::Cpu).unwrap();
    source.build(DType::F32, &Device::Cpu).unwrap()
}

/// The model's log-probs on a fixture's input ids equal the fixture's reference to 1e-4.
fn assert_matches_reference(model: &Decoder, expected: &serde_json::Value, what: &str) {
    let got = model.log_probs(&input_ids(expected), None, false).unwrap();
    let (values, shape) = json_tensor(&expected["logprobs"]);
    let want = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
    assert_close!(got, want, 1e-4, "{what} vs {}", expected["reference"]);
}

fn input_ids(expected: &serde_json::Value) -> Tensor {
    let rows: Vec<Vec<u32>> = serde_json::from_value(expected["input_ids"].clone()).unwrap();
    Tensor::new(rows, &Device::Cpu).unwrap()
}

#[test]
fn logprobs_match_transformers_for_every_family() {
    for name in FAMILIES {
        let expected = read_json(&format!("models/{name}/expected.json"));
        let (_, model) = load(name);
        let ids = input_ids(&expected);
        let got = model.log_probs(&ids, None, false).unwrap();
        let (values, shape) = json_tensor(&expected["logprobs"]);
        let want = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
        // Quoted: expected["reference"] names the transformers class and version.
        assert_close!(
            got,
            want,
            1e-4,
            "{name} log-probs vs {}",
            expected["reference"]
        );

        let loss = next_token_logprobs(&got, &ids)
            .unwrap()
            .mean_all()
            .unwrap()
            .neg()
            .unwrap();
        let want_loss = expected["loss"].as_f64().unwrap() as f32;
        let loss = loss.to_scalar::<f32>().unwrap();
        assert!(
            (loss - want_loss).abs() < 1e-4,
            "{name}: loss {loss} vs transformers {want_loss}"
        );
    }
}

#[test]
fn kv_cache_decoding_equals_full_forward() {
    for name in FAMILIES {
        let expected = read_json(&format!("models/{name}/expected.json"));
        let (_, model) = load(name);
        let ids = input_ids(&expected);
        let t = ids.dim(1).unwrap();
        let full = model.forward(&ids, None, false).unwrap();
        // A prefill of 5 positions, then one position at a time (sliding windows of 4 are crossed).
        let mut cache = model.new_cache();
        let mut parts = vec![model
            .forward(&ids.narrow(1, 0, 5).unwrap(), Some(&mut cache), false)
            .unwrap()];
        for i in 5..t {
            parts.push(
                model
                    .forward(&ids.narrow(1, i, 1).unwrap(), Some(&mut cache), false)
                    .unwrap(),
            );
        }
        let cached = Tensor::cat(&parts, 1).unwrap();
        assert_close!(cached, full, 1e-4, "{name}: cached vs full logits");
        assert_eq!(cache.len(), t);
    }
}

/// Loads a fixture into trainable variables.
fn trainable(name: &str) -> (VarMap, Decoder) {
    let dir = fixture(&format!("models/{name}"));
    let source = ModelSource::open(&dir, DType::F32, &Device::Cpu).unwrap();
    let varmap = VarMap::new();
    let model = Decoder::new(
        source.decoder_config().unwrap(),
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let mut varmap = varmap;
    varmap.load(dir.join("model.safetensors")).unwrap();
    (varmap, model)
}

#[test]
fn every_parameter_gets_a_gradient() {
    for name in FAMILIES {
        let expected = read_json(&format!("models/{name}/expected.json"));
        let (varmap, model) = trainable(name);
        let ids = input_ids(&expected);
        let lp = model.log_probs(&ids, None, true).unwrap();
        let loss = next_token_logprobs(&lp, &ids)
            .unwrap()
            .mean_all()
            .unwrap()
            .neg()
            .unwrap();
        let grads = loss.backward().unwrap();
        let vars = varmap.data().lock().unwrap();
        assert!(!vars.is_empty());
        for (key, var) in vars.iter() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient for {key}"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{name}: gradient of {key} is {norm}"
            );
        }
    }
}

#[test]
fn log_probs_are_normalised() {
    let (_, model) = load("gemma2");
    let ids = Tensor::new(&[[1u32, 5, 9, 3]], &Device::Cpu).unwrap();
    let lp = model.log_probs(&ids, None, false).unwrap();
    let total = lp.exp().unwrap().sum(D::Minus1).unwrap();
    let ones = Tensor::ones_like(&total).unwrap();
    assert_close!(total, ones, 1e-5, "probabilities sum to one");
}

#[test]
fn transformers_4_config_layout_reads_the_same() {
    // config_legacy.json: the same model in the 4.x layout (top-level rope_theta / rope_scaling,
    // no layer_types for some families), as most Hub checkpoints still ship it.
    for name in FAMILIES {
        let dir = fixture(&format!("models/{name}"));
        let read = |file: &str| {
            let path = dir.join(file);
            let json: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            graft_models::registry::decoder_config(&path, &json).unwrap()
        };
        assert_eq!(read("config.json"), read("config_legacy.json"), "{name}");
    }
}

#[test]
fn gguf_files_match_transformers() {
    // llama.cpp's convert_hf_to_gguf.py output of the llama fixture: f32 (compared with the HF
    // reference), and Q8_0 (compared with transformers run on the dequantized Q8_0 weights).
    for (file, expected) in [
        ("llama.gguf", "llama/expected.json"),
        ("llama-q8_0.gguf", "llama-q8_0.expected.json"),
    ] {
        let expected = read_json(&format!("models/{expected}"));
        assert_matches_reference(&open(&fixture(&format!("models/{file}"))), &expected, file);
    }
}

#[test]
fn attention_dropout_applies_only_in_training() {
    let dir = fixture("models/llama");
    let source = ModelSource::open(&dir, DType::F32, &Device::Cpu).unwrap();
    let mut cfg = source.decoder_config().unwrap().clone();
    cfg.attention_dropout = 0.5;
    let model = Decoder::new(&cfg, source.var_builder(DType::F32, &Device::Cpu).unwrap()).unwrap();
    let ids = Tensor::new(&[[1u32, 5, 9, 3, 7, 2]], &Device::Cpu).unwrap();
    let eval_a = model.forward(&ids, None, false).unwrap();
    let eval_b = model.forward(&ids, None, false).unwrap();
    assert_close!(eval_a, eval_b, 0.0, "eval is deterministic");
    let train = model.forward(&ids, None, true).unwrap();
    assert!(
        graft_testkit::max_abs_diff(&train, &eval_a) > 1e-3,
        "dropout changes training forwards"
    );
}

#[test]
fn sharded_checkpoint_loads_like_a_single_file() {
    // Split the llama fixture into two shards with a `model.safetensors.index.json`, as
    // save_pretrained(max_shard_size=…) writes them.
    let src = fixture("models/llama");
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let (a, b) = names.split_at(names.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in [
        ("model-00001-of-00002.safetensors", a),
        ("model-00002-of-00002.safetensors", b),
    ] {
        let sub: std::collections::HashMap<String, Tensor> = part
            .iter()
            .map(|n| ((*n).clone(), tensors[*n].clone()))
            .collect();
        candle_core::safetensors::save(&sub, dir.path().join(shard)).unwrap();
        for n in part {
            weight_map.insert((*n).clone(), shard.into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();

    let expected = read_json("models/llama/expected.json");
    assert_matches_reference(&open(dir.path()), &expected, "sharded llama");

    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = ModelSource::open(dir.path(), DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("model-00002-of-00002.safetensors") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn every_family_converted_by_llama_cpp_loads_from_gguf() {
    // tools/fixtures/convert_fixtures_to_gguf.py: llama.cpp's convert_hf_to_gguf.py at f32. These
    // families' GGUF metadata carries everything the HF config says (llama3 rope via rope_freqs, q/k
    // permutation, Gemma's +1 norms, OLMo 2's norm placement), so they match transformers' reference.
    for name in ["llama3_tied", "qwen2", "gemma", "olmo2"] {
        let expected = read_json(&format!("models/{name}/expected.json"));
        assert_matches_reference(
            &open(&fixture(&format!("models/{name}.gguf"))),
            &expected,
            name,
        );
    }
    // GGUF cannot express the rest of these fixtures' settings, and graft reads the files as llama.cpp
    // does: mistral becomes `llama` without its window (the weights equal the llama fixture's), gemma2
    // scales queries by head_dim instead of query_pre_attn_scalar = 24, gemma3 uses llama.cpp's 5:1
    // local/global pattern instead of the fixture's [local, global, local].
    let llama = read_json("models/llama/expected.json");
    assert_matches_reference(
        &open(&fixture("models/mistral.gguf")),
        &llama,
        "mistral.gguf as llama",
    );
    for name in ["gemma2", "gemma3_text"] {
        let source = ModelSource::open(
            &fixture(&format!("models/{name}.gguf")),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            source.decoder_config().unwrap().head_dim as f64,
            source.decoder_config().unwrap().attn_scale.powi(-2).round(),
            "{name}"
        );
        source.build(DType::F32, &Device::Cpu).unwrap();
    }
}

#[test]
fn packed_documents_do_not_attend_to_each_other() {
    // Two documents in one packed row (positions reset, segment ids 0 and 1) give exactly the
    // logits each gives alone; with a sliding window too (gemma2 has windows of 4).
    for name in ["llama", "gemma2"] {
        let (_, model) = load(name);
        let a = [5u32, 9, 17, 3, 44, 21, 8];
        let b = [60u32, 2, 33, 7, 91];
        let row = |v: &[u32]| Tensor::new(v, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let alone = |doc: &[u32]| model.forward(&row(doc), None, false).unwrap();
        let ids: Vec<u32> = a.iter().chain(&b).copied().collect();
        let positions: Vec<u32> = (0..a.len() as u32).chain(0..b.len() as u32).collect();
        let segments: Vec<u32> = std::iter::repeat_n(0, a.len())
            .chain(std::iter::repeat_n(1, b.len()))
            .collect();
        let packed = model
            .forward_packed(&row(&ids), &row(&positions), &row(&segments), false)
            .unwrap();
        assert_close!(
            packed.narrow(1, 0, a.len()).unwrap(),
            alone(&a),
            1e-4,
            "{name}: first document"
        );
        assert_close!(
            packed.narrow(1, a.len(), b.len()).unwrap(),
            alone(&b),
            1e-4,
            "{name}: second document"
        );
    }
}

#[test]
fn gguf_weights_kept_quantized_match_their_dequantized_reference() {
    // Q8_0 linear weights stay quantized (q/k rows un-permuted as bytes); the log-probs equal
    // transformers' on the dequantized weights. (Gradients through them: graft-adapters' QLoRA test.)
    let path = fixture("models/llama-q8_0.gguf");
    let source = ModelSource::open_with(
        &path,
        DType::F32,
        &Device::Cpu,
        graft_models::Quantization::Stored,
    )
    .unwrap();
    assert!(
        source.quantized.len() >= 12,
        "{} linear weights kept quantized",
        source.quantized.len()
    );
    let model = source.build(DType::F32, &Device::Cpu).unwrap();
    let expected = read_json("models/llama-q8_0.expected.json");
    assert_matches_reference(&model, &expected, "llama-q8_0.gguf kept quantized");
    // Saving dequantizes: the HF copy scores the same.
    let dir = tempfile::tempdir().unwrap();
    source
        .save_hf(&dir.path().join("hf"), DType::F32, false)
        .unwrap();
    assert_matches_reference(
        &open(&dir.path().join("hf")),
        &expected,
        "re-saved from quantized",
    );
}
