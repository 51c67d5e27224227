//! NF4 with double quantization equals bitsandbytes 0.50 (tools/fixtures/make_nf4_fixtures.py):
//! its dynamic map, packed codes, block scales and dequantization; and a 4-bit model's log-probs
//! equal the reference forward with bitsandbytes' quantize → dequantize weights.

use candle_core::{DType, Device, Tensor, D};
use graft_models::layers::nf4::{dynamic_map, Absmax, Nf4Tensor};
use graft_models::layers::quant::QuantWeight;
use graft_models::{next_token_logprobs, Decoder, ModelSource, Quantization};
use graft_testkit::{fixture, read_json};
use serde_json::Value;

fn vec<T: serde::de::DeserializeOwned>(v: &Value) -> Vec<T> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn quantization_equals_bitsandbytes() {
    let f = read_json("quant/nf4.json");
    let cases = f["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for c in cases {
        let name = format!("{} dq={}", c["name"], c["double_quant"]);
        let shape: Vec<usize> = vec(&c["shape"]);
        let shape = (shape[0], shape[1]);
        let w: Vec<f32> = vec(&c["weight"]);
        let want: Vec<f32> = vec(&c["dequantized"]);
        let q = match c["double_quant"].as_bool().unwrap() {
            false => Nf4Tensor::quantize(&w, shape, false),
            true => {
                let offset = c["offset"].as_f64().unwrap() as f32;
                // graft's own offset (the exact mean) is within an ulp or two of torch's.
                let own = Nf4Tensor::quantize(&w, shape, true);
                let Absmax::Double { offset: o, .. } = own.absmax else {
                    panic!()
                };
                assert!(
                    (o - offset).abs() <= 2.0 * f32::EPSILON * offset.abs(),
                    "{name}: {o} vs {offset}"
                );
                Nf4Tensor::quantize_with_offset(&w, shape, offset)
            }
        };
        assert_eq!(q.packed, vec::<u8>(&c["packed"]), "{name}: packed codes");
        match &q.absmax {
            Absmax::F32(a) => assert_eq!(a, &vec::<f32>(&c["absmax"]), "{name}"),
            Absmax::Double {
                codes,
                absmax2,
                code,
                ..
            } => {
                assert_eq!(code, &vec::<f32>(&c["code2"]), "{name}: dynamic map");
                assert_eq!(
                    codes,
                    &vec::<u8>(&c["absmax_codes"]),
                    "{name}: absmax codes"
                );
                assert_eq!(absmax2, &vec::<f32>(&c["absmax2"]), "{name}");
            }
        }
        assert_eq!(q.dequantize_vec(), want, "{name}: dequantized");
    }
    assert_eq!(dynamic_map().len(), 256);
}

fn logprobs(m: &Decoder, ids: &[u32]) -> Vec<f32> {
    let x = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = m.forward(&x, None, false).unwrap();
    let lp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
    next_token_logprobs(&lp, &x)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() < tol, "{what}, token {i}: {a} vs {b}");
    }
}

/// The whole model in NF4: the modules bitsandbytes quantizes, log-probs equal to the dense model
/// with bitsandbytes' dequantized weights, and to graft's dense model on its own dequantization.
#[test]
fn nf4_model_matches_the_bitsandbytes_reference() {
    let path = fixture("models/llama_h64");
    let f = read_json("quant/nf4_llama_logprobs.json");
    let ids: Vec<u32> = vec(&f["input_ids"]);
    let reference: Vec<f32> = vec(&f["dequantized_logprobs"]);
    let nf4 = Quantization::Nf4 { double_quant: true };
    let mut source = ModelSource::open_with(&path, DType::F32, &Device::Cpu, nf4).unwrap();
    let mut keys: Vec<String> = source
        .quantized
        .keys()
        .map(|k| k.trim_end_matches(".weight").to_string())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec::<String>(&f["quantized_modules"]),
        "the modules bitsandbytes quantizes"
    );
    let own = logprobs(&source.build(DType::F32, &Device::Cpu).unwrap(), &ids);
    // graft's own offsets may move one absmax code by a step: close, not equal.
    close(&own, &reference, 5e-3, "graft's NF4");

    // graft's 4-bit codes with bitsandbytes' recorded block-scale states (its offset is torch's
    // machine-dependent float32 mean; its native CPU 8-bit quantizer can land one level off the
    // nearest in near-ties) rebuild exactly bitsandbytes' quantization — and its log-probs.
    let dense = ModelSource::open(&path, DType::F32, &Device::Cpu)
        .unwrap()
        .tensors(DType::F32)
        .unwrap();
    for (module, st) in f["scale_states"].as_object().unwrap() {
        let key = format!("{module}.weight");
        let w = &dense[&key];
        let values: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        let offset = st["offset"].as_f64().unwrap() as f32;
        let mut q = Nf4Tensor::quantize_with_offset(&values, w.dims2().unwrap(), offset);
        let want: Vec<u8> = vec(&st["absmax_codes"]);
        let Absmax::Double { codes, .. } = &q.absmax else {
            panic!()
        };
        let off: Vec<(u8, u8)> = codes
            .iter()
            .zip(&want)
            .filter(|(a, b)| a != b)
            .map(|(a, b)| (*a, *b))
            .collect();
        assert!(
            off.len() <= 1 && off.iter().all(|(a, b)| a.abs_diff(*b) == 1),
            "{module}: absmax codes off the nearest level: {off:?}"
        );
        q.absmax = Absmax::Double {
            codes: want,
            absmax2: vec(&st["absmax2"]),
            code: dynamic_map(),
            offset,
        };
        source
            .quantized
            .insert(key, std::sync::Arc::new(QuantWeight::Nf4(q)));
    }
    let model = source.build(DType::F32, &Device::Cpu).unwrap();
    let got = logprobs(&model, &ids);
    close(
        &got,
        &reference,
        1e-5,
        "graft with bitsandbytes' scale states",
    );

    // Same weights, dense: each weight replaced by its dequantization.
    let mut weights = source.tensors(DType::F32).unwrap();
    for (k, q) in &source.quantized {
        weights.insert(k.clone(), q.dequantize(&Device::Cpu).unwrap());
    }
    let vb = candle_nn::VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let dense_model = Decoder::new(source.decoder_config().unwrap(), vb).unwrap();
    close(
        &got,
        &logprobs(&dense_model, &ids),
        1e-5,
        "dense dequantized",
    );

    // About 4.13 bits per linear weight.
    let bytes: usize = source.quantized.values().map(|q| q.bytes()).sum();
    let params: usize = dense
        .iter()
        .filter(|(k, _)| source.quantized.contains_key(*k))
        .map(|(_, t)| t.elem_count())
        .sum::<usize>();
    assert!(
        (bytes as f64) < params as f64 * 0.75,
        "{bytes} bytes for {params} weights"
    );
}
