//! Batched decoding gives each sequence what decoding it alone gives: prompts of different
//! lengths (left padding, sliding windows), sequences that stop early or never start, a shared
//! prompt sampled with different seeds, and a GGUF kept quantized (8-bit activations).

use candle_core::{DType, Device};
use graft_models::{Model, ModelSource, Quantization};
use graft_serve::{generate, generate_batch, GenerateOptions};
use graft_testkit::fixture;

fn open(name: &str, quantization: Quantization) -> Model {
    let dev = Device::Cpu;
    let source = ModelSource::open_with(&fixture(name), DType::F32, &dev, quantization).unwrap();
    source.build_model(DType::F32, &dev).unwrap()
}

fn opts(max_new_tokens: usize, temperature: f64, seed: u64, eos: Vec<u32>) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        temperature,
        top_p: 1.0,
        seed,
        eos_token_ids: eos,
    }
}

fn check(model: &Model, prompts: &[Vec<u32>], opts: &[GenerateOptions], what: &str) {
    let dev = Device::Cpu;
    let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let batched = generate_batch(model, &refs, opts, &dev).unwrap();
    for (i, (p, o)) in prompts.iter().zip(opts).enumerate() {
        let alone = generate(model, p, o, &dev, |_| true).unwrap();
        assert_eq!(batched[i], alone, "{what}: sequence {i}");
    }
}

#[test]
fn batched_decoding_equals_decoding_alone() {
    let prompts: Vec<Vec<u32>> = vec![
        vec![5, 17, 3],
        (1..13).collect(),
        vec![40, 41, 42, 43, 44, 45, 46],
        vec![9],
    ];
    for (name, q) in [
        ("models/llama", Quantization::None),
        ("models/gemma3_text", Quantization::None),
        ("models/llama-q8_0.gguf", Quantization::Stored),
    ] {
        let model = open(name, q);
        let greedy: Vec<GenerateOptions> = vec![
            opts(10, 0.0, 0, vec![]),
            opts(6, 0.0, 0, vec![]),
            opts(0, 0.0, 0, vec![]),
            opts(12, 0.0, 0, vec![]),
        ];
        check(&model, &prompts, &greedy, name);
        // A sequence that stops at its first token (its greedy first token as EOS).
        let first = generate(&model, &prompts[1], &greedy[0], &Device::Cpu, |_| true)
            .unwrap()
            .0[0];
        let mut early = greedy.clone();
        early[1].eos_token_ids = vec![first];
        check(&model, &prompts, &early, name);
        // One prompt, four samples with their own seeds (one prefill).
        let shared = vec![prompts[1].clone(); 4];
        let sampled: Vec<GenerateOptions> = (0..4).map(|s| opts(8, 1.0, 100 + s, vec![])).collect();
        check(&model, &shared, &sampled, name);
        // Rows of several prompts with several samples each (each prompt prefilled once).
        let mixed: Vec<Vec<u32>> = [0, 2, 0, 2, 3, 2]
            .iter()
            .map(|&i| prompts[i].clone())
            .collect();
        let sampled: Vec<GenerateOptions> = (0..6).map(|s| opts(7, 1.0, 200 + s, vec![])).collect();
        check(&model, &mixed, &sampled, name);
    }
}
