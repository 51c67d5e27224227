//! Activation checkpointing gives the gradients of the plain backward: full fine-tuning (every
//! weight inside the checkpointed blocks) and LoRA with dropout (the recomputation replays the
//! same dropout masks).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use graft_models::{next_token_logprobs, Decoder, ModelSource};
use graft_testkit::fixture;

fn grads(model: &Decoder, varmap: &VarMap, ids: &Tensor) -> HashMap<String, Tensor> {
    model.set_dropout_seed(11);
    graft_models::layers::side_grads::set_trainable(
        varmap
            .data()
            .lock()
            .unwrap()
            .values()
            .map(|v| v.id())
            .collect::<Vec<_>>(),
    );
    let lp = model.log_probs(ids, None, true).unwrap();
    let loss = next_token_logprobs(&lp, ids)
        .unwrap()
        .mean_all()
        .unwrap()
        .neg()
        .unwrap();
    let g = loss.backward().unwrap();
    let mut side = graft_models::layers::side_grads::take_side_grads();
    varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let a = g.get(v.as_tensor()).cloned();
            let b = side.remove(&v.id());
            let total = match (a, b) {
                (Some(a), Some(b)) => (a + b).unwrap(),
                (a, b) => a.or(b).unwrap_or_else(|| panic!("no gradient for {k}")),
            };
            (k.clone(), total)
        })
        .collect()
}

fn assert_same(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    assert_eq!(a.len(), b.len());
    for (k, x) in a {
        let y = &b[k];
        let scale = x
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .max(1e-6);
        let d = (x - y)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d <= 1e-5 * scale, "{k}: {d} (scale {scale})");
        assert!(scale > 1e-6 || k.contains("lora_B"), "{k}: zero gradient");
    }
}

#[test]
fn checkpointed_gradients_equal_plain_ones() {
    let source = ModelSource::open(&fixture("models/llama"), DType::F32, &Device::Cpu).unwrap();
    let ids = Tensor::new(
        &[
            [1u32, 7, 30, 2, 55, 90, 12, 4],
            [3, 9, 27, 81, 5, 15, 45, 6],
        ],
        &Device::Cpu,
    )
    .unwrap();

    // Full fine-tuning: every weight a variable.
    let varmap = VarMap::new();
    let mut model = Decoder::new(
        source.decoder_config().unwrap(),
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let weights = source.tensors(DType::F32).unwrap();
    for (k, v) in varmap.data().lock().unwrap().iter() {
        v.set(&weights[k]).unwrap();
    }
    let plain = grads(&model, &varmap, &ids);
    model.checkpointing = true;
    assert_same(&plain, &grads(&model, &varmap, &ids));

    // LoRA with dropout on a frozen base; B made non-zero so A gets gradients too.
    let mut model = source.build(DType::F32, &Device::Cpu).unwrap();
    let cfg: graft_adapters::LoraConfig = serde_json::from_value(serde_json::json!({
        "r": 4, "lora_alpha": 8, "lora_dropout": 0.3, "target_modules": "all-linear"
    }))
    .unwrap();
    let varmap = VarMap::new();
    graft_adapters::init_trainable(&mut model, &cfg, &varmap, 0).unwrap();
    for (k, v) in varmap.data().lock().unwrap().iter() {
        if k.contains("lora_B") {
            v.set(&Tensor::randn(0f32, 0.1, v.dims(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let plain = grads(&model, &varmap, &ids);
    model.checkpointing = true;
    assert_same(&plain, &grads(&model, &varmap, &ids));
}
