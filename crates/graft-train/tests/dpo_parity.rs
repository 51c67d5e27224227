//! The preference family against TRL 1.16 (tools/fixtures/make_dpo_fixtures.py): pair tokenization
//! as DPOTrainer builds it, summed response log-probs of the reference model, and every loss and
//! reward metric computed from TRL's own log-probs (DPOTrainer `sigmoid`, `ipo`, `hinge`; CPOTrainer
//! `simpo` with cpo_alpha = 0; the legacy cDPO formula).

use candle_core::{DType, Device, Tensor};
use graft_data::rows::TrainRow;
use graft_data::{parse_row, Tokenize};
use graft_models::{next_token_logprobs, ModelSource};
use graft_testkit::{fixture, read_json};
use graft_train::batch::collate;
use graft_train::objectives::{registry, TokenBatch};

fn rows() -> Vec<serde_json::Value> {
    read_json("dpo/pairs.json")["rows"]
        .as_array()
        .unwrap()
        .clone()
}

/// TRL's rows as graft training rows (chosen, with its rejected attached).
fn pair_rows(tok: &Tokenize) -> Vec<TrainRow> {
    rows()
        .iter()
        .map(|r| {
            let row = parse_row(serde_json::json!({"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}).as_object().unwrap()).unwrap();
            let (c, rej) = tok.preference(&row).unwrap();
            let row = |e: graft_data::Example| TrainRow { input_ids: e.input_ids, targets: e.targets, ..Default::default() };
            TrainRow { others: vec![row(rej)], ..row(c) }
        })
        .collect()
}

#[test]
fn pairs_tokenize_and_score_as_trl() {
    let source = ModelSource::open(&fixture("models/llama"), DType::F32, &Device::Cpu).unwrap();
    let tok = Tokenize {
        tokenizer: source.tokenizer().unwrap(),
        template: None,
        max_len: 1024,
    };
    let mut train_rows = Vec::new();
    for r in rows() {
        let row = parse_row(serde_json::json!({"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}).as_object().unwrap()).unwrap();
        let (c, rej) = tok.preference(&row).unwrap();
        let ids = |k: &str| -> Vec<u32> { serde_json::from_value(r[k].clone()).unwrap() };
        let p = ids("prompt_input_ids");
        assert_eq!(c.input_ids, [p.clone(), ids("chosen_input_ids")].concat());
        assert_eq!(
            rej.input_ids,
            [p.clone(), ids("rejected_input_ids")].concat()
        );
        assert_eq!(c.num_targets() as u64, r["chosen_len"].as_u64().unwrap());
        assert_eq!(
            rej.num_targets() as u64,
            r["rejected_len"].as_u64().unwrap()
        );
        let row = |e: graft_data::Example| TrainRow {
            input_ids: e.input_ids,
            targets: e.targets,
            ..Default::default()
        };
        train_rows.push(TrainRow {
            others: vec![row(rej)],
            ..row(c)
        });
    }
    // The reference model's summed response log-probs through graft's collate (chosen rows, then rejected).
    let model = source.build(DType::F32, &Device::Cpu).unwrap();
    let batch = collate(&train_rows.iter().collect::<Vec<_>>(), &Device::Cpu).unwrap();
    let lp = model.log_probs(&batch.ids, None, false).unwrap();
    let sums: Vec<f32> = (next_token_logprobs(&lp, &batch.ids).unwrap() * &batch.mask)
        .unwrap()
        .sum(1)
        .unwrap()
        .to_vec1()
        .unwrap();
    let want: Vec<f64> = rows()
        .iter()
        .map(|r| r["ref_chosen_logps"].as_f64().unwrap())
        .chain(
            rows()
                .iter()
                .map(|r| r["ref_rejected_logps"].as_f64().unwrap()),
        )
        .collect();
    for (g, w) in sums.iter().zip(&want) {
        assert!(
            (*g as f64 - w).abs() < 1e-3,
            "reference log-prob {g} vs TRL {w}"
        );
    }
}

/// A batch whose rows carry TRL's summed log-probs spread evenly over each response's length, so
/// sums and averages are exactly TRL's.
fn batch_from_trl() -> (Tensor, Tensor, Tensor) {
    let rows = rows();
    let seqs: Vec<(f64, f64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["policy_chosen_logps"].as_f64().unwrap(),
                r["ref_chosen_logps"].as_f64().unwrap(),
                r["chosen_len"].as_u64().unwrap(),
            )
        })
        .chain(rows.iter().map(|r| {
            (
                r["policy_rejected_logps"].as_f64().unwrap(),
                r["ref_rejected_logps"].as_f64().unwrap(),
                r["rejected_len"].as_u64().unwrap(),
            )
        }))
        .collect();
    let t = seqs.iter().map(|s| s.2).max().unwrap() as usize;
    let (mut lp, mut rf, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for (p, r, n) in &seqs {
        for i in 0..t {
            let on = (i as u64) < *n;
            lp.push(if on { (*p / *n as f64) as f32 } else { 0.0 });
            rf.push(if on { (*r / *n as f64) as f32 } else { 0.0 });
            mask.push(on as u8 as f32);
        }
    }
    let shape = (seqs.len(), t);
    (
        Tensor::from_vec(lp, shape, &Device::Cpu).unwrap(),
        Tensor::from_vec(rf, shape, &Device::Cpu).unwrap(),
        Tensor::from_vec(mask, shape, &Device::Cpu).unwrap(),
    )
}

#[test]
fn losses_and_metrics_match_trl() {
    let f = read_json("dpo/pairs.json");
    let (lp, rf, mask) = batch_from_trl();
    let cases = [
        (
            serde_json::json!({"kind": "dpo", "beta": 0.1}),
            f["losses"]["sigmoid"]["loss"].as_f64().unwrap(),
        ),
        (
            serde_json::json!({"kind": "ipo", "beta": 0.1}),
            f["losses"]["ipo"]["loss"].as_f64().unwrap(),
        ),
        (
            serde_json::json!({"kind": "slic", "beta": 0.1}),
            f["losses"]["hinge"]["loss"].as_f64().unwrap(),
        ),
        (
            serde_json::json!({"kind": "cdpo", "beta": 0.1, "label_smoothing": 0.1}),
            f["losses"]["sigmoid_label_smoothing_0.1"]["legacy_cdpo_formula_not_used_by_trl_1_16"]
                .as_f64()
                .unwrap(),
        ),
        (
            serde_json::json!({"kind": "robust", "beta": 0.1, "label_smoothing": 0.1}),
            f["losses"]["robust_label_smoothing_0.1"]["loss"]
                .as_f64()
                .unwrap(),
        ),
        (
            // TRL's `sigmoid_norm`: −log σ(β·h̄) on per-token averaged log-ratios.
            serde_json::json!({"kind": "dpo_norm", "beta": 0.1}),
            f["losses"]["sigmoid_norm"]["loss"].as_f64().unwrap(),
        ),
        (
            serde_json::json!({"kind": "simpo", "beta": 0.1, "gamma": 0.5}),
            f["simpo"]["loss"].as_f64().unwrap(),
        ),
        (
            serde_json::json!({"kind": "simpo", "beta": 2.0, "gamma": 0.5}),
            f["simpo_beta_2.0"]["loss"].as_f64().unwrap(),
        ),
    ];
    for (spec, want) in cases {
        let obj = registry::objective(&spec).unwrap();
        assert!(obj.pairs());
        let out = obj
            .loss(&TokenBatch {
                logps: &lp,
                mask: &mask,
                ref_logps: Some(&rf),
                lse: None,
                step_tokens: 1.0,
                step_rows: 4.0,
                valid: None,
                labels: None,
                scores: None,
            })
            .unwrap();
        let loss = out.loss.to_scalar::<f32>().unwrap() as f64;
        assert!(
            (loss - want).abs() < 2e-5 * want.abs().max(1.0),
            "{spec}: {loss} vs TRL {want}"
        );
        if spec["kind"] == "dpo" {
            let logged = &f["losses"]["sigmoid"]["metrics_logged"];
            for (name, value) in out.metrics {
                let w = logged[name].as_f64().unwrap();
                assert!((value - w).abs() < 1e-5, "{name}: {value} vs TRL {w}");
            }
        }
    }
}

#[test]
fn first_dpo_step_matches_trl_end_to_end() {
    // The whole chain on TRL's batch: tokenize → collate → policy and reference log-probs →
    // DPO loss → gradients, with the perturbed policy TRL used (saved by the fixture script).
    let f = read_json("dpo/pairs.json");
    let reference = ModelSource::open(&fixture("models/llama"), DType::F32, &Device::Cpu).unwrap();
    let tok = Tokenize {
        tokenizer: reference.tokenizer().unwrap(),
        template: None,
        max_len: 1024,
    };
    let train_rows = pair_rows(&tok);
    let batch = collate(&train_rows.iter().collect::<Vec<_>>(), &Device::Cpu).unwrap();
    let varmap = candle_nn::VarMap::new();
    let policy_source =
        ModelSource::open(&fixture("dpo/policy"), DType::F32, &Device::Cpu).unwrap();
    let policy = graft_models::Decoder::new(
        policy_source.decoder_config().unwrap(),
        candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let mut vm = varmap.clone();
    vm.load(fixture("dpo/policy/model.safetensors")).unwrap();
    let logps = |m: &graft_models::Decoder, train: bool| {
        next_token_logprobs(&m.log_probs(&batch.ids, None, train).unwrap(), &batch.ids).unwrap()
    };
    let ref_model = reference.build(DType::F32, &Device::Cpu).unwrap();
    let ref_logps = logps(&ref_model, false).detach();
    let pol_logps = logps(&policy, true);
    let obj = registry::objective(&serde_json::json!({"kind": "dpo", "beta": 0.1})).unwrap();
    let out = obj
        .loss(&TokenBatch {
            logps: &pol_logps,
            mask: &batch.mask,
            ref_logps: Some(&ref_logps),
            lse: None,
            step_tokens: 1.0,
            step_rows: 4.0,
            valid: None,
            labels: None,
            scores: None,
        })
        .unwrap();
    let loss = out.loss.to_scalar::<f32>().unwrap() as f64;
    let want = f["losses"]["sigmoid"]["loss"].as_f64().unwrap();
    assert!(
        (loss - want).abs() < 1e-5,
        "first-step DPO loss {loss} vs TRL {want}"
    );
    let grads = out.loss.backward().unwrap();
    let vars = varmap.data().lock().unwrap();
    for name in [
        "model.layers.0.self_attn.q_proj.weight",
        "model.embed_tokens.weight",
    ] {
        let g = grads.get(vars[name].as_tensor()).unwrap();
        let (values, shape) = graft_testkit::json_tensor(&f["grads_sigmoid"][name]);
        let w = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
        let d = graft_testkit::max_abs_diff(g, &w);
        assert!(d < 1e-5, "gradient of {name}: max |Δ| {d}");
    }
}

#[test]
fn orpo_matches_trl_end_to_end() {
    // TRL 1.16 ORPOTrainer (tools/fixtures/make_orpo_fixture.py) on the same rows and perturbed policy.
    let f = read_json("dpo/orpo.json");
    let source = ModelSource::open(&fixture("models/llama"), DType::F32, &Device::Cpu).unwrap();
    let tok = Tokenize {
        tokenizer: source.tokenizer().unwrap(),
        template: None,
        max_len: 1024,
    };
    let train_rows = pair_rows(&tok);
    let batch = collate(&train_rows.iter().collect::<Vec<_>>(), &Device::Cpu).unwrap();
    let policy = ModelSource::open(&fixture("dpo/policy"), DType::F32, &Device::Cpu)
        .unwrap()
        .build(DType::F32, &Device::Cpu)
        .unwrap();
    let logps = next_token_logprobs(
        &policy.log_probs(&batch.ids, None, false).unwrap(),
        &batch.ids,
    )
    .unwrap();
    let obj = registry::objective(&serde_json::json!({"kind": "orpo"})).unwrap();
    let out = obj
        .loss(&TokenBatch {
            logps: &logps,
            mask: &batch.mask,
            ref_logps: None,
            lse: None,
            step_tokens: 1.0,
            step_rows: 4.0,
            valid: Some(&batch.valid),
            labels: None,
            scores: None,
        })
        .unwrap();
    let loss = out.loss.to_scalar::<f32>().unwrap() as f64;
    assert!(
        (loss - f["loss"].as_f64().unwrap()).abs() < 1e-5,
        "ORPO loss {loss} vs TRL {}",
        f["loss"]
    );
    for (name, value) in out.metrics {
        let w = f["metrics_logged"][name].as_f64().unwrap();
        assert!((value - w).abs() < 1e-5, "{name}: {value} vs TRL {w}");
    }
}

#[test]
fn kto_matches_trl_end_to_end() {
    // TRL 1.16 KTOTrainer (tools/fixtures/make_kto_fixture.py): tokenization, KL rows (each prompt
    // with the previous row's completion), the KL estimate, the loss and the reward metrics.
    let f = read_json("dpo/kto.json");
    let source = ModelSource::open(&fixture("models/llama"), DType::F32, &Device::Cpu).unwrap();
    let tok = Tokenize {
        tokenizer: source.tokenizer().unwrap(),
        template: None,
        max_len: 1024,
    };
    let train_rows: Vec<TrainRow> = f["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let row = parse_row(
                serde_json::json!({"prompt": r["prompt"], "completion": r["completion"]})
                    .as_object()
                    .unwrap(),
            )
            .unwrap();
            let e = tok.example(&row).unwrap();
            let want: Vec<u32> = serde_json::from_value(r["prompt_input_ids"].clone()).unwrap();
            let completion: Vec<u32> =
                serde_json::from_value(r["completion_input_ids"].clone()).unwrap();
            assert_eq!(e.input_ids, [want, completion].concat());
            TrainRow {
                input_ids: e.input_ids,
                targets: e.targets,
                label: Some(r["label"].as_bool().unwrap()),
                ..Default::default()
            }
        })
        .collect();
    let batch = collate(&train_rows.iter().collect::<Vec<_>>(), &Device::Cpu).unwrap();
    let ids: Vec<Vec<u32>> = batch.ids.to_vec2().unwrap();
    for (i, kl) in f["kl_rows"].as_array().unwrap().iter().enumerate() {
        let want: Vec<u32> = serde_json::from_value(kl["KL_input_ids"].clone()).unwrap();
        assert_eq!(&ids[4 + i][..want.len()], &want[..], "KL row {i}");
    }
    let policy = ModelSource::open(&fixture("dpo/policy"), DType::F32, &Device::Cpu)
        .unwrap()
        .build(DType::F32, &Device::Cpu)
        .unwrap();
    let reference = source.build(DType::F32, &Device::Cpu).unwrap();
    let lp = |m: &graft_models::Decoder| {
        next_token_logprobs(&m.log_probs(&batch.ids, None, false).unwrap(), &batch.ids).unwrap()
    };
    let (pol, refr) = (lp(&policy), lp(&reference));
    let obj = registry::objective(&serde_json::json!({"kind": "kto"})).unwrap();
    let out = obj
        .loss(&TokenBatch {
            logps: &pol,
            mask: &batch.mask,
            ref_logps: Some(&refr),
            lse: None,
            step_tokens: 1.0,
            step_rows: 8.0,
            valid: Some(&batch.valid),
            labels: batch.labels.as_ref(),
            scores: batch.scores.as_ref(),
        })
        .unwrap();
    let loss = out.loss.to_scalar::<f32>().unwrap() as f64;
    assert!(
        (loss - f["loss"].as_f64().unwrap()).abs() < 1e-5,
        "KTO loss {loss} vs TRL {}",
        f["loss"]
    );
    for (name, value) in out.metrics {
        let w = f["metrics_logged"][name].as_f64().unwrap();
        assert!((value - w).abs() < 1e-5, "{name}: {value} vs TRL {w}");
    }
}
