//! One SFT step against transformers + torch (tools/fixtures/make_train_fixtures.py: transformers
//! 5.24.0 LlamaForCausalLM on the tiny llama fixture, torch 2.15 AdamW, TRL 1.16 SFTTrainer labels),
//! and the data side: assistant masks and prompt/completion masks as transformers and TRL build them.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use graft_data::{parse_row, ChatTemplate, Tokenize};
use graft_models::{next_token_logprobs, Decoder, ModelSource};
use graft_testkit::{fixture, json_tensor, read_json};
use graft_train::objectives::{registry, TokenBatch};
use graft_train::optim::{clip_grad_norm, AdamW};

fn tensor(v: &serde_json::Value) -> Tensor {
    let (values, shape) = json_tensor(v);
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    graft_testkit::max_abs_diff(a, b)
}

#[test]
fn one_sft_step_matches_transformers_and_torch_adamw() {
    sft_step(false);
}

/// The same step with the tensors declared trainable, as the trainer does: the blocks run as
/// graft-models' fused op (hand-written backward) and must give transformers' gradients too.
#[test]
fn fused_blocks_match_transformers_and_torch_adamw() {
    sft_step(true);
}

fn sft_step(fused: bool) {
    let f = read_json("train/sft_step.json");
    let source = ModelSource::open(&fixture("models/llama"), DType::F32, &Device::Cpu).unwrap();
    let varmap = VarMap::new();
    let model = Decoder::new(
        source.decoder_config().unwrap(),
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let mut vm = varmap.clone();
    vm.load(fixture("models/llama/model.safetensors")).unwrap();
    let declared = match fused {
        true => varmap.all_vars().iter().map(|v| v.id()).collect(),
        false => Vec::new(),
    };
    graft_models::layers::side_grads::set_trainable(declared);

    let ids_rows: Vec<Vec<u32>> = serde_json::from_value(f["input_ids"].clone()).unwrap();
    let labels: Vec<Vec<i64>> = serde_json::from_value(f["labels"].clone()).unwrap();
    let ids = Tensor::new(ids_rows, &Device::Cpu).unwrap();
    let mask: Vec<Vec<f32>> = labels
        .iter()
        .map(|r| r[1..].iter().map(|&l| (l != -100) as u8 as f32).collect())
        .collect();
    let mask = Tensor::new(mask, &Device::Cpu).unwrap();
    let n_targets = mask.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    assert_eq!(n_targets as u64, f["num_target_tokens"].as_u64().unwrap());

    let lp = model.log_probs(&ids, None, true).unwrap();
    let logps = next_token_logprobs(&lp, &ids).unwrap();
    let objective = registry::objective(&serde_json::json!({"kind": "sft"})).unwrap();
    let out = objective
        .loss(&TokenBatch {
            logps: &logps,
            mask: &mask,
            ref_logps: None,
            lse: None,
            step_tokens: n_targets,
            step_rows: 2.0,
            valid: None,
            labels: None,
            scores: None,
        })
        .unwrap();
    let loss = out.loss.to_scalar::<f32>().unwrap() as f64;
    assert!(
        (loss - f["loss"].as_f64().unwrap()).abs() < 1e-5,
        "loss {loss} vs {}",
        f["loss"]
    );

    let grads = out.loss.backward().unwrap();
    let mut side = graft_models::layers::side_grads::take_side_grads();
    graft_models::layers::side_grads::set_trainable(Vec::new());
    // Every block's 9 tensors came from the fused op, or none did.
    assert_eq!(side.is_empty(), !fused, "fused blocks used: {}", side.len());
    let mut opt = AdamW::new(&varmap, 0.9, 0.95, 1e-8, 0.1).unwrap();
    let mut g: Vec<Tensor> = opt
        .vars()
        .map(|(_, v)| {
            grads
                .get(v.as_tensor())
                .cloned()
                .or_else(|| side.remove(&v.id()))
                .unwrap()
        })
        .collect();
    for ((name, _), gi) in opt.vars().zip(&g) {
        let d = max_diff(gi, &tensor(&f["grads"][name]));
        assert!(d < 1e-5, "gradient of {name}: max |Δ| {d}");
    }
    let norm = clip_grad_norm(&mut g, Some(1.0)).unwrap();
    assert!(
        (norm - f["grad_norm"].as_f64().unwrap()).abs() < 1e-4,
        "grad norm {norm}"
    );
    opt.update(&g, 1e-3).unwrap();
    // The first AdamW step moves each weight by ≈ lr·g/(|g| + eps): where the clipped gradient is
    // within a few eps of 0 (2.4e-8 at the smallest here), float noise in g moves the update by a
    // visible fraction of lr. Those elements are held to lr/50, all others to 1e-6.
    let coef = f["clip_coef"].as_f64().unwrap() as f32;
    for (name, var) in opt.vars() {
        let got: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let want: Vec<f32> = tensor(&f["params_after_step"][name])
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let grad: Vec<f32> = tensor(&f["grads"][name])
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for ((a, b), g) in got.iter().zip(&want).zip(&grad) {
            let tol = if (g * coef).abs() >= 1e-6 { 1e-6 } else { 2e-5 };
            assert!(
                (a - b).abs() <= tol,
                "{name} after one AdamW step: {a} vs torch {b} (clipped grad {})",
                g * coef
            );
        }
    }
}

fn tokenizer_and_template(template_file: &str) -> (ModelSource, ChatTemplate) {
    let source = ModelSource::open(&fixture("models/llama"), DType::F32, &Device::Cpu).unwrap();
    let text = std::fs::read_to_string(fixture(template_file)).unwrap();
    (source, ChatTemplate::new(&text).unwrap())
}

#[test]
fn multi_turn_assistant_mask_matches_transformers() {
    let f = read_json("train/sft_mask.json");
    let (source, template) = tokenizer_and_template("train/chat_template_generation.jinja");
    assert!(template.has_generation_markers);
    let tok = Tokenize {
        tokenizer: source.tokenizer().unwrap(),
        template: Some(&template),
        max_len: 4096,
    };
    let row = parse_row(
        serde_json::json!({"messages": f["messages"]})
            .as_object()
            .unwrap(),
    )
    .unwrap();
    let ex = tok.example(&row).unwrap();
    let want_ids: Vec<u32> = serde_json::from_value(f["input_ids"].clone()).unwrap();
    let want_mask: Vec<u8> = serde_json::from_value(f["assistant_masks"].clone()).unwrap();
    assert_eq!(ex.input_ids, want_ids);
    let got_mask: Vec<u8> = ex.targets.iter().map(|&b| b as u8).collect();
    assert_eq!(got_mask, want_mask, "return_assistant_tokens_mask");

    // The template without markers: assistant turns found by prefix renderings instead. They cover
    // the same tokens plus the newline after each <|im_end|> (part of the turn in the rendering).
    let plain = ChatTemplate::new(
        source
            .tokenizer()
            .unwrap()
            .chat_template
            .as_deref()
            .unwrap(),
    )
    .unwrap();
    assert!(!plain.has_generation_markers);
    let tok = Tokenize {
        tokenizer: source.tokenizer().unwrap(),
        template: Some(&plain),
        max_len: 4096,
    };
    let ex2 = tok.example(&row).unwrap();
    assert_eq!(ex2.input_ids, want_ids);
    for (i, (&a, &b)) in ex2.targets.iter().zip(&want_mask).enumerate() {
        if b == 1 {
            assert!(a, "token {i} is an assistant token");
        }
    }
    assert!(ex2.num_targets() > ex.num_targets());
}

#[test]
fn prompt_completion_and_text_rows_match_trl() {
    let f = read_json("train/prompt_completion.json");
    let source = ModelSource::open(&fixture("models/llama"), DType::F32, &Device::Cpu).unwrap();
    let tok = Tokenize {
        tokenizer: source.tokenizer().unwrap(),
        template: None,
        max_len: 4096,
    };
    let rows = f["rows"].as_array().unwrap();
    for (i, r) in rows.iter().enumerate() {
        let ex = tok
            .example(&parse_row(r.as_object().unwrap()).unwrap())
            .unwrap();
        let want_ids: Vec<u32> = serde_json::from_value(f["input_ids"][i].clone()).unwrap();
        let want_mask: Vec<u8> = serde_json::from_value(f["completion_mask"][i].clone()).unwrap();
        assert_eq!(ex.input_ids, want_ids, "row {i}");
        assert_eq!(
            ex.targets.iter().map(|&b| b as u8).collect::<Vec<_>>(),
            want_mask,
            "row {i}"
        );
    }
    let merge = &f["boundary_merge_row"];
    let ex = tok
        .example(&parse_row(merge["row"].as_object().unwrap()).unwrap())
        .unwrap();
    assert_eq!(
        ex.input_ids,
        serde_json::from_value::<Vec<u32>>(merge["input_ids"].clone()).unwrap()
    );
    assert_eq!(
        ex.targets.iter().map(|&b| b as u8).collect::<Vec<_>>(),
        serde_json::from_value::<Vec<u8>>(merge["completion_mask"].clone()).unwrap()
    );
    let text = tok
        .example(&parse_row(f["text_row"].as_object().unwrap()).unwrap())
        .unwrap();
    assert_eq!(
        text.input_ids,
        serde_json::from_value::<Vec<u32>>(f["text_input_ids"].clone()).unwrap()
    );
}
