//! The fused Llama block (fused_block.rs, used for full fine-tuning while the trainer declares
//! the weights trainable) against the composed block: logits and the gradient of every tensor to
//! 1e-5 of its scale, with grouped-query attention (6 query heads on 2 kv heads), head dim 6
//! (an odd number of rotary pairs), Gemma's (1 + w) norms with GeGLU, batch 2, and packed rows (a
//! per-row block-diagonal mask with position resets).

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, TensorId};
use candle_nn::{VarBuilder, VarMap};
use graft_models::layers::side_grads::{set_trainable, take_side_grads};
use graft_models::Decoder;
use serde_json::json;

fn model(norm_one_plus: bool) -> Result<(Decoder, VarMap)> {
    let err = |e: graft_models::ModelError| candle_core::Error::Msg(e.to_string());
    let config = json!({"model_type": "llama", "vocab_size": 40, "hidden_size": 36,
        "intermediate_size": 52, "num_hidden_layers": 2, "num_attention_heads": 6,
        "num_key_value_heads": 2, "head_dim": 6, "rms_norm_eps": 1e-5, "tie_word_embeddings": false});
    let mut cfg = graft_models::registry::decoder_config(std::path::Path::new("test"), &config)
        .map_err(err)?;
    if norm_one_plus {
        // Gemma's block: (1 + w) norms and the tanh-GELU gate (GeGLU).
        cfg.norm = graft_models::config::NormKind::OnePlus;
        cfg.act = graft_models::config::Activation::GeluTanh;
    }
    let weights = graft_models::init::init_weights(&cfg, 0.2, 7).map_err(err)?;
    let varmap = VarMap::new();
    let decoder = Decoder::new(
        &cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    for (name, var) in varmap.data().lock().unwrap().iter() {
        // Norm weights away from 1 (or 0) so their gradients are exercised.
        let w = &weights[name];
        let w = if w.rank() == 1 {
            (w + Tensor::randn(0f32, 0.3, w.shape(), &Device::Cpu)?)?
        } else {
            w.clone()
        };
        var.set(&w)?;
    }
    Ok((decoder, varmap))
}

/// Gradients of Σ logits·r for every variable, with the variables declared trainable (`fused`:
/// the fused block runs where it handles the block) or not (the composed block everywhere), and
/// how many tensors got their gradient through the side store.
fn grads(
    decoder: &Decoder,
    varmap: &VarMap,
    fused: bool,
    run: &dyn Fn(&Decoder) -> Result<Tensor>,
    r: &Tensor,
) -> Result<(Tensor, HashMap<String, Tensor>, usize)> {
    let vars: Vec<(String, candle_core::Var)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let ids: Vec<TensorId> = match fused {
        true => vars.iter().map(|(_, v)| v.id()).collect(),
        false => Vec::new(),
    };
    set_trainable(ids);
    take_side_grads();
    let logits = run(decoder)?;
    let store = (&logits * r)?.sum_all()?.backward()?;
    let mut side = take_side_grads();
    let side_count = side.len();
    let mut out = HashMap::new();
    for (name, var) in &vars {
        let g = match (store.get(var.as_tensor()), side.remove(&var.id())) {
            (Some(a), Some(b)) => (a + b)?,
            (a, b) => a
                .cloned()
                .or(b)
                .unwrap_or_else(|| panic!("{name}: no gradient")),
        };
        out.insert(name.clone(), g);
    }
    set_trainable(Vec::new());
    Ok((logits, out, side_count))
}

/// Logits and every gradient of the two runs agree to 1e-5 of each gradient's scale.
fn assert_same(
    what: &str,
    (logits, grads): (&Tensor, &HashMap<String, Tensor>),
    (ref_logits, ref_grads): (&Tensor, &HashMap<String, Tensor>),
) -> Result<()> {
    let diff = graft_testkit::max_abs_diff(logits, ref_logits);
    assert!(diff < 1e-5, "{what}: logits differ by {diff}");
    assert_eq!(ref_grads.len(), grads.len());
    for (name, want) in ref_grads {
        let got = &grads[name];
        let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(scale > 0.0, "{what}: {name} has a zero gradient");
        let diff = graft_testkit::max_abs_diff(got, want);
        assert!(
            diff <= 1e-5 * scale.max(1.0),
            "{what}: ∂{name} differs by {diff} (scale {scale})"
        );
    }
    Ok(())
}

fn compare(norm_one_plus: bool, packed: bool) -> Result<()> {
    let dev = Device::Cpu;
    let (decoder, varmap) = model(norm_one_plus)?;
    let (b, t) = (2usize, 9usize);
    let ids = Tensor::from_vec(
        (0..(b * t) as u32)
            .map(|i| (i * 7 + 3) % 40)
            .collect::<Vec<_>>(),
        (b, t),
        &dev,
    )?;
    let positions = Tensor::from_vec(
        (0..b * t)
            .map(|i| if i % t < 4 { i % t } else { i % t - 4 } as u32)
            .collect::<Vec<_>>(),
        (b, t),
        &dev,
    )?;
    let segments = Tensor::from_vec(
        (0..b * t)
            .map(|i| u32::from(i % t >= 4))
            .collect::<Vec<_>>(),
        (b, t),
        &dev,
    )?;
    let run = |d: &Decoder| match packed {
        true => d.forward_packed(&ids, &positions, &segments, true),
        false => d.forward(&ids, None, true),
    };
    let r = Tensor::randn(0f32, 1.0, (b, t, 40), &dev)?;
    let (ref_logits, ref_grads, _) = grads(&decoder, &varmap, false, &run, &r)?;
    let (logits, fused_grads, side) = grads(&decoder, &varmap, true, &run, &r)?;
    // The fused path ran: each layer's 9 tensors got their gradients on the side.
    assert_eq!(side, 2 * 9, "side gradients");
    let what = format!("one_plus={norm_one_plus} packed={packed}");
    assert_same(&what, (&logits, &fused_grads), (&ref_logits, &ref_grads))
}

#[test]
fn fused_block_equals_composed_block() -> Result<()> {
    compare(false, false)?;
    compare(true, false)?;
    compare(false, true)
}

/// Every registered decoder family's tiny fixture (tests/fixtures/models/<model_type>, made by
/// transformers), trained in full: with the weights declared trainable the fused block runs where
/// `fused_block::handles` says it may, and the result must equal the composed blocks — a
/// configuration field the fused block ignored would show here as a difference. A family added to
/// the registry is covered by its fixture alone.
#[test]
fn every_family_trains_the_same_fused_or_composed() -> Result<()> {
    let dev = Device::Cpu;
    let mut fused = Vec::new();
    for family in graft_models::registry::FAMILIES
        .iter()
        .map(|f| f.model_type)
    {
        let err = |e: graft_models::ModelError| candle_core::Error::Msg(e.to_string());
        let source = graft_models::ModelSource::open(
            &graft_testkit::fixture(&format!("models/{family}")),
            DType::F32,
            &dev,
        )
        .map_err(err)?;
        let cfg = source.decoder_config().map_err(err)?.clone();
        let fuses = graft_models::layers::fused_block::handles(&cfg);
        let varmap = VarMap::new();
        let decoder = Decoder::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
        let weights = source.tensors(DType::F32).map_err(err)?;
        for (name, var) in varmap.data().lock().unwrap().iter() {
            var.set(&weights[name])?;
        }
        let (b, t, v) = (2usize, 7usize, cfg.vocab_size);
        let ids: Vec<u32> = (0..(b * t) as u32)
            .map(|i| (i * 11 + 5) % v as u32)
            .collect();
        let ids = Tensor::from_vec(ids, (b, t), &dev)?;
        let run = |d: &Decoder| d.forward(&ids, None, true);
        let r = Tensor::randn(0f32, 1.0, (b, t, v), &dev)?;
        let (ref_logits, ref_grads, _) = grads(&decoder, &varmap, false, &run, &r)?;
        let (logits, fused_grads, side) = grads(&decoder, &varmap, true, &run, &r)?;
        let layers = cfg.num_hidden_layers();
        assert_eq!(
            side,
            if fuses { layers * 9 } else { 0 },
            "{family}: side gradients"
        );
        assert_same(family, (&logits, &fused_grads), (&ref_logits, &ref_grads))?;
        if fuses {
            fused.push(family);
        }
    }
    // Biases (Qwen2), sandwich norms, soft-capping and QK-norm (Gemma 2/3, OLMo 2) stay composed.
    assert_eq!(
        fused,
        ["llama", "mistral", "gemma"],
        "families the fused block runs"
    );
    Ok(())
}
