//! Ladder Side-Tuning on the tiny llama fixtures: the pruned start is the backbone's own blocks
//! (reduction 1) or the planted important units (reduction 2); a saved side network loads back
//! to the same outputs; cached decoding equals the full forward.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarMap;
use graft_adapters::lst::{Ladder, SideSpec};
use graft_adapters::lst_prune::pruned_side;
use graft_models::{Decoder, ModelSource};
use graft_testkit::{fixture, max_abs_diff};

fn source(name: &str) -> ModelSource {
    ModelSource::open(&fixture(name), DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn pruning_by_one_keeps_every_block_whole() {
    let src = source("models/llama_h64");
    let cfg = src.decoder_config().unwrap();
    let w = src.tensors(DType::F32).unwrap();
    let (spec, side) = pruned_side(cfg, 1, &[0, 1], &w, &HashMap::new()).unwrap();
    assert_eq!(spec.rope_pairs[0], (0..8).collect::<Vec<_>>());
    for (k, t) in &side {
        let b = &w[k.strip_prefix("side.").unwrap()];
        assert_eq!(t.dims(), b.dims(), "{k}");
        assert_eq!(max_abs_diff(t, b), 0.0, "{k}");
    }
    // Every side tensor but the unused embeddings is there.
    assert_eq!(side.len(), 2 * 9 + 1);
}

#[test]
fn pruning_keeps_the_important_units() {
    // Importance planted on hidden units {1, 5, …}, rotary pair 3, value dim 6 and MLP unit 9:
    // reduction 2 keeps them (with the next-highest filling the rest), and the side tensors are
    // the backbone's rows/columns at the kept indices.
    let src = source("models/llama_h64");
    let cfg = src.decoder_config().unwrap();
    let w = src.tensors(DType::F32).unwrap();
    let mut imp: HashMap<String, Tensor> = w
        .iter()
        .map(|(k, t)| (k.clone(), t.ones_like().unwrap()))
        .collect();
    let plant = |t: &Tensor, dim: usize, idx: &[usize]| -> Tensor {
        let mut v = vec![1f32; t.dim(dim).unwrap()];
        for &i in idx {
            v[i] = 100.0;
        }
        let shape: Vec<usize> = (0..t.rank())
            .map(|d| if d == dim { v.len() } else { 1 })
            .collect();
        let s = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
        t.broadcast_mul(&s).unwrap()
    };
    let hid_planted: Vec<usize> = (0..64).filter(|c| c % 4 == 1).collect(); // 16 of the 32 kept
    let e = "model.embed_tokens.weight";
    imp.insert(e.into(), plant(&imp[e], 1, &hid_planted));
    let q = "model.layers.0.self_attn.q_proj.weight";
    imp.insert(q.into(), plant(&imp[q], 0, &[3, 16 + 3, 32 + 3, 48 + 3]));
    let v = "model.layers.0.self_attn.v_proj.weight";
    imp.insert(v.into(), plant(&imp[v], 0, &[6, 16 + 6]));
    let g = "model.layers.0.mlp.gate_proj.weight";
    imp.insert(g.into(), plant(&imp[g], 0, &[9]));
    let (spec, side) = pruned_side(cfg, 2, &[0], &w, &imp).unwrap();
    assert!(spec.rope_pairs[0].contains(&3), "{:?}", spec.rope_pairs);
    assert_eq!(spec.rope_pairs[0].len(), 4);
    // The kept hidden units are the planted ones plus the 16 lowest-index others (ties).
    let mut hid = hid_planted.clone();
    hid.extend((0..64).filter(|c| c % 4 != 1).take(16));
    hid.sort();
    let norm = &side["side.model.norm.weight"];
    let expect = w["model.norm.weight"]
        .index_select(
            &Tensor::new(
                hid.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                &Device::Cpu,
            )
            .unwrap(),
            0,
        )
        .unwrap();
    assert_eq!(max_abs_diff(norm, &expect), 0.0);
    // q rows: per head the kept pairs' first halves, then their second halves.
    let pairs = &spec.rope_pairs[0];
    let row = 2 * 8 + pairs.len(); // head 2, first second-half dim
    let got = side["side.model.layers.0.self_attn.q_proj.weight"]
        .get(row)
        .unwrap();
    let want = w[q].get(2 * 16 + pairs[0] + 8).unwrap();
    let want = want
        .index_select(
            &Tensor::new(
                hid.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                &Device::Cpu,
            )
            .unwrap(),
            0,
        )
        .unwrap();
    assert_eq!(max_abs_diff(&got, &want), 0.0);
    assert_eq!(
        side["side.model.layers.0.mlp.gate_proj.weight"].dims(),
        [64, 32]
    );
    let down = &side["side.model.layers.0.mlp.down_proj.weight"];
    assert_eq!(down.dims(), [32, 64]);
}

fn ladder_model(spec: SideSpec, weights: Option<&HashMap<String, Tensor>>) -> (Decoder, VarMap) {
    let src = source("models/llama_h64");
    let mut m = src.build(DType::F32, &Device::Cpu).unwrap();
    let vm = VarMap::new();
    let l = Ladder::new(&m.cfg, spec, &vm, 7, weights).unwrap();
    m.side = Some(Arc::new(l));
    (m, vm)
}

#[test]
fn a_saved_side_network_loads_back_and_decodes_with_a_cache() {
    let src = source("models/llama_h64");
    let cfg = src.decoder_config().unwrap().clone();
    let w = src.tensors(DType::F32).unwrap();
    let (spec, side) = pruned_side(&cfg, 2, &[1], &w, &HashMap::new()).unwrap();
    let (m, vm) = ladder_model(spec.clone(), Some(&side));
    // Move the gates off ½ so the ladder's mix matters.
    vm.data().lock().unwrap()["lst.gates"]
        .set(&Tensor::new(&[0.3f32], &Device::Cpu).unwrap())
        .unwrap();
    let saved: HashMap<String, Tensor> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let ids = Tensor::new(&[[5u32, 17, 3, 99, 42, 8, 64]], &Device::Cpu).unwrap();
    let full = m.forward(&ids, None, false).unwrap();

    let mut loaded = src.build(DType::F32, &Device::Cpu).unwrap();
    let l = Ladder::load(&cfg, spec, &saved).unwrap();
    loaded.side = Some(Arc::new(l));
    let again = loaded.forward(&ids, None, false).unwrap();
    assert!(max_abs_diff(&full, &again) < 1e-6);
    // Without the side network the logits differ (the side computes them).
    let plain = src
        .build(DType::F32, &Device::Cpu)
        .unwrap()
        .forward(&ids, None, false)
        .unwrap();
    assert!(max_abs_diff(&full, &plain) > 1e-3);

    // Prefix of 4, then one token at a time through the cache (backbone + side layers).
    let mut cache = loaded.new_cache();
    let mut steps = vec![loaded
        .forward(&ids.narrow(1, 0, 4).unwrap(), Some(&mut cache), false)
        .unwrap()];
    for t in 4..7 {
        steps.push(
            loaded
                .forward(&ids.narrow(1, t, 1).unwrap(), Some(&mut cache), false)
                .unwrap(),
        );
    }
    let cached = Tensor::cat(&steps, 1).unwrap();
    assert!(
        max_abs_diff(&full, &cached) < 1e-4,
        "{}",
        max_abs_diff(&full, &cached)
    );
    let _ = full.argmax(D::Minus1).unwrap();
}
