//! T5-family parity with transformers (fixtures by tools/fixtures/make_t5_fixtures.py: T5 v1.0
//! tied+ReLU, T5 v1.1 untied gated-GELU, mT5 gated-SiLU): encoder states, target log-probs, loss,
//! one step's gradient of every parameter, greedy generation through the KV cache.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::VarBuilder;
use graft_models::t5::relative_bucket;
use graft_models::{ModelSource, T5Cache, T5};
use graft_testkit::{assert_close, fixture, json_tensor, max_abs_diff, read_json};

const FAMILIES: &[&str] = &["t5", "t5_v11", "mt5"];

fn tensor(v: &serde_json::Value) -> Tensor {
    let (values, shape) = json_tensor(v);
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<Vec<i64>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn id_tensor(rows: &[Vec<u32>]) -> Tensor {
    Tensor::new(rows.to_vec(), &Device::Cpu).unwrap()
}

/// The model built over trainable variables (one per checkpoint tensor), and the variables.
fn trainable(name: &str) -> (T5, HashMap<String, Var>) {
    let dir = fixture(&format!("models/{name}"));
    let source = ModelSource::open(&dir, DType::F32, &Device::Cpu).unwrap();
    let cfg = source
        .t5_config()
        .unwrap_or_else(|| panic!("{name}: not T5"));
    let tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let vars: HashMap<String, Var> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), Var::from_tensor(t).unwrap()))
        .collect();
    let as_tensors = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let vb = VarBuilder::from_tensors(as_tensors, DType::F32, &Device::Cpu);
    (T5::new(cfg, vb).unwrap(), vars)
}

#[test]
fn relative_buckets_match_transformers() {
    let cases = read_json("models/t5/buckets.json");
    for case in cases.as_array().unwrap() {
        let rel: Vec<i64> = serde_json::from_value(case["relative_position"].clone()).unwrap();
        let want: Vec<u32> = serde_json::from_value(case["bucket"].clone()).unwrap();
        let bi = case["bidirectional"].as_bool().unwrap();
        let n = case["num_buckets"].as_u64().unwrap() as usize;
        let max = case["max_distance"].as_u64().unwrap() as usize;
        let got: Vec<u32> = rel
            .iter()
            .map(|&r| relative_bucket(r, bi, n, max))
            .collect();
        assert_eq!(
            got, want,
            "bidirectional {bi}, {n} buckets, max distance {max}"
        );
    }
}

#[test]
fn encoder_states_log_probs_loss_and_gradients_match_transformers() {
    for &name in FAMILIES {
        let expected = read_json(&format!("models/{name}/expected.json"));
        let (model, vars) = trainable(name);
        let input: Vec<Vec<u32>> = serde_json::from_value(expected["input_ids"].clone()).unwrap();
        let input = id_tensor(&input);
        let mask = tensor(&expected["attention_mask"]);
        let labels = ids(&expected["labels"]);
        let decoder_ids = id_tensor(&model.shift_right(&labels).unwrap());

        let enc = model.encode(&input, Some(&mask), false).unwrap();
        // Padded encoder positions are never attended to; compare the real tokens only.
        let want_enc = tensor(&expected["encoder_last_hidden_state"]);
        let keep = mask.unsqueeze(2).unwrap();
        assert_close!(
            enc.broadcast_mul(&keep).unwrap(),
            want_enc.broadcast_mul(&keep).unwrap(),
            1e-4,
            "{name}: encoder states"
        );

        let logits = model
            .forward(&input, Some(&mask), &decoder_ids, false)
            .unwrap();
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
        assert_close!(
            logp,
            tensor(&expected["log_probs"]),
            1e-4,
            "{name}: log-probs"
        );

        // Mean cross-entropy over labels != -100, as T5ForConditionalGeneration computes it.
        let (mut picked, mut count) = (Vec::new(), 0usize);
        for (b, row) in labels.iter().enumerate() {
            for (t, &l) in row.iter().enumerate() {
                if l >= 0 {
                    let lp = logp
                        .get(b)
                        .unwrap()
                        .get(t)
                        .unwrap()
                        .get(l as usize)
                        .unwrap();
                    picked.push(lp);
                    count += 1;
                }
            }
        }
        let loss = (Tensor::stack(&picked, 0)
            .unwrap()
            .sum_all()
            .unwrap()
            .neg()
            .unwrap()
            / count as f64)
            .unwrap();
        let want_loss = expected["loss"].as_f64().unwrap();
        let got_loss = loss.to_scalar::<f32>().unwrap() as f64;
        assert!(
            (got_loss - want_loss).abs() < 1e-5,
            "{name}: loss {got_loss} vs {want_loss}"
        );

        let grads = loss.backward().unwrap();
        let want = candle_core::safetensors::load(
            fixture(&format!("models/{name}/grads.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        for (key, var) in &vars {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: {key} got no gradient"));
            let w = &want[key];
            let scale = w
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(scale > 0.0, "{name}: {key}: the reference gradient is zero");
            let d = max_abs_diff(g, w);
            assert!(
                d <= 1e-4 * scale + 1e-7,
                "{name}: gradient of {key}: max |Δ| {d:e} (scale {scale:e})"
            );
        }
    }
}

/// Greedy decoding one token at a time through the cache (cross-attention k/v computed once).
fn greedy(model: &T5, input: &Tensor, mask: &Tensor, steps: usize) -> Vec<Vec<u32>> {
    let enc = model.encode(input, Some(mask), false).unwrap();
    let b = input.dim(0).unwrap();
    let start = model.cfg.decoder_start_token_id.unwrap();
    let mut cache = T5Cache::new(model.cfg.decoder_layers());
    let mut out: Vec<Vec<u32>> = vec![vec![start]; b];
    for _ in 0..steps {
        let last: Vec<Vec<u32>> = out.iter().map(|r| vec![*r.last().unwrap()]).collect();
        let logits = model
            .decode(&id_tensor(&last), &enc, Some(mask), Some(&mut cache), false)
            .unwrap();
        let next: Vec<u32> = logits
            .squeeze(1)
            .unwrap()
            .argmax(D::Minus1)
            .unwrap()
            .to_vec1()
            .unwrap();
        for (row, n) in out.iter_mut().zip(next) {
            row.push(n);
        }
    }
    out
}

#[test]
fn cached_greedy_generation_matches_transformers_and_the_full_forward() {
    for &name in FAMILIES {
        let expected = read_json(&format!("models/{name}/expected.json"));
        let source = ModelSource::open(
            &fixture(&format!("models/{name}")),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let model = source.build_t5(DType::F32, &Device::Cpu).unwrap();
        let input: Vec<Vec<u32>> = serde_json::from_value(expected["input_ids"].clone()).unwrap();
        let input = id_tensor(&input);
        let mask = tensor(&expected["attention_mask"]);
        let want: Vec<Vec<u32>> = serde_json::from_value(expected["greedy"].clone()).unwrap();
        let got = greedy(&model, &input, &mask, want[0].len() - 1);
        assert_eq!(got, want, "{name}: greedy generation");

        // The cached step logits equal one teacher-forced forward over the generated prefix.
        let full = model
            .forward(&input, Some(&mask), &id_tensor(&got), false)
            .unwrap();
        let enc = model.encode(&input, Some(&mask), false).unwrap();
        let mut cache = T5Cache::new(model.cfg.decoder_layers());
        let first = model
            .decode(
                &id_tensor(&[vec![got[0][0]], vec![got[1][0]]]),
                &enc,
                Some(&mask),
                Some(&mut cache),
                false,
            )
            .unwrap();
        let rest: Vec<Vec<u32>> = got.iter().map(|r| r[1..].to_vec()).collect();
        let more = model
            .decode(
                &id_tensor(&rest),
                &enc,
                Some(&mask),
                Some(&mut cache),
                false,
            )
            .unwrap();
        let cached = Tensor::cat(&[&first, &more], 1).unwrap();
        assert_close!(cached, full, 1e-4, "{name}: cached decode vs full forward");
    }
}
