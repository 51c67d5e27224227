//! Real small checkpoints (set GRAFT_REAL_MODELS to a folder made by
//! tools/fixtures/fetch_real_models.sh; skipped otherwise): SmolLM2-135M-Instruct (GGUF Q4_1/Q8_0, BPE,
//! ChatML) and Gemma-3-270M (GGUF Q4_K/Q5_0/Q6_K/Q8_0, SentencePiece with scores, 262k vocabulary),
//! compared with transformers' own loading of the same files (tools/fixtures/make_real_fixtures.py),
//! and GGUF tokenizers checked against the test vectors llama.cpp ships.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use graft_data::{ChatTemplate, Message};
use graft_models::{ModelSource, Tokenizer};
use graft_serve::{generate, GenerateOptions};
use graft_testkit::{read_json, real_models};
use serde_json::Value;

fn open(path: &Path) -> (ModelSource, graft_models::Decoder) {
    let source = ModelSource::open(path, DType::F32, &Device::Cpu).unwrap();
    let model = source.build(DType::F32, &Device::Cpu).unwrap();
    (source, model)
}

/// Token ids and per-token log-probs of `rows` (`{"text", "input_ids", "token_logprobs"}`) within `tol`.
fn check_scores(source: &ModelSource, model: &graft_models::Decoder, rows: &[Value], tol: f32) {
    let tokenizer = source.tokenizer().unwrap();
    for row in rows {
        let text = row["text"].as_str().unwrap();
        let ids = tokenizer.encode(text, true).unwrap();
        let want_ids: Vec<u32> = serde_json::from_value(row["input_ids"].clone()).unwrap();
        assert_eq!(ids, want_ids, "tokenization of {text:?}");
        let got = &graft_models::score::score_rows(model, &[ids], &Device::Cpu, |_| {}).unwrap()[0];
        let want: Vec<f32> = row["token_logprobs"].as_array().unwrap()[1..]
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        eprintln!("{text:?}: max |Δ log-prob| = {worst:e}");
        assert!(worst <= tol, "{text:?}: max |Δ log-prob| {worst} > {tol}");
    }
}

fn greedy(model: graft_models::Decoder, prompt: &[u32], n: usize, eos: Vec<u32>) -> Vec<u32> {
    let model = graft_models::Model::from(model);
    let opts = GenerateOptions {
        max_new_tokens: n,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        eos_token_ids: eos,
    };
    generate(&model, prompt, &opts, &Device::Cpu, |_| true)
        .unwrap()
        .0
}

#[test]
fn smollm2_gguf_matches_transformers() {
    let Some(dir) = real_models("smollm2_gguf_matches_transformers") else {
        return;
    };
    let (source, model) = open(&dir.join("smollm2-135m-instruct.gguf"));
    let rows: Vec<Value> =
        std::fs::read_to_string(graft_testkit::fixture("real/smollm2_score.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    // The bar: ≤ 2e-3 per token against transformers' dequantized float32 loading.
    check_scores(&source, &model, &rows, 2e-3);

    let chat = read_json("real/smollm2_chat.json");
    let tokenizer = source.tokenizer().unwrap();
    let template = ChatTemplate::new(tokenizer.chat_template.as_deref().unwrap()).unwrap();
    let messages = vec![Message::new("user", "What is the capital of France?")];
    let prompt = template
        .render(
            &messages,
            true,
            tokenizer.bos_token.as_deref(),
            tokenizer.eos_token.as_deref(),
        )
        .unwrap();
    assert_eq!(prompt, chat["prompt"].as_str().unwrap());
    let ids = tokenizer.encode(&prompt, false).unwrap();
    assert_eq!(
        ids,
        serde_json::from_value::<Vec<u32>>(chat["prompt_ids"].clone()).unwrap()
    );
    let out = greedy(model, &ids, 24, source.generation.eos_token_ids.clone());
    let answer = tokenizer.decode(&out, true).unwrap();
    eprintln!("SmolLM2 answers: {answer:?}");
    assert_eq!(
        out,
        serde_json::from_value::<Vec<u32>>(chat["greedy_ids"].clone()).unwrap()
    );
    assert!(answer.contains("Paris"), "{answer}");
}

#[test]
fn gemma3_270m_gguf_matches_transformers() {
    let Some(dir) = real_models("gemma3_270m_gguf_matches_transformers") else {
        return;
    };
    let (source, model) = open(&dir.join("gemma-3-270m.gguf"));
    let expected = read_json("real/gemma3_270m.json");
    check_scores(&source, &model, expected["texts"].as_array().unwrap(), 2e-3);

    let cont = &expected["continuation"];
    let tokenizer = source.tokenizer().unwrap();
    let ids = tokenizer
        .encode(cont["prompt"].as_str().unwrap(), true)
        .unwrap();
    let want: Vec<u32> = serde_json::from_value(cont["greedy_ids"].clone()).unwrap();
    let out = greedy(model, &ids, want.len(), vec![]);
    eprintln!(
        "Gemma 3 continues: {:?}",
        tokenizer.decode(&out, true).unwrap()
    );
    assert_eq!(out, want);
}

/// llama.cpp's `.inp` (tests separated by `\n__ggml_vocab_test__\n`) and `.out` (ids per line).
fn vocab_tests(vocab: &Path) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(format!("{}.inp", vocab.display())).unwrap();
    let out = std::fs::read_to_string(format!("{}.out", vocab.display())).unwrap();
    let sep = "\n__ggml_vocab_test__\n";
    let mut texts: Vec<String> = inp.split(sep).map(str::to_string).collect();
    if texts.last().is_some_and(|t| t.is_empty()) {
        texts.pop();
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(texts.len(), ids.len(), "{}", vocab.display());
    texts.into_iter().zip(ids).collect()
}

fn gguf_tokenizer(path: &Path) -> Tokenizer {
    let content = graft_models::gguf::read_content(path).unwrap();
    graft_models::gguf_tokenizer::tokenizer_from_gguf(path, &content)
        .unwrap()
        .0
}

#[test]
fn gguf_tokenizers_match_llama_cpp_test_vectors() {
    let Some(dir) = real_models("gguf_tokenizers_match_llama_cpp_test_vectors") else {
        return;
    };
    // The vocabularies of the tokenizer kinds graft rebuilds from GGUF (gpt2 BPE with the pre-tokenizers
    // it knows, and llama SentencePiece); llama.cpp tokenizes them without special tokens.
    for name in ["gpt-2", "llama-bpe", "qwen2", "llama-spm", "phi-3"] {
        let vocab = dir.join(format!("vocab/ggml-vocab-{name}.gguf"));
        let tokenizer = gguf_tokenizer(&vocab);
        let tests = vocab_tests(&vocab);
        let failures: Vec<String> = tests
            .iter()
            .filter_map(|(text, want)| {
                let got = tokenizer.encode(text, false).unwrap();
                (got != *want).then(|| format!("{text:?}: got {got:?}, llama.cpp {want:?}"))
            })
            .collect();
        eprintln!(
            "{name}: {}/{} test vectors match",
            tests.len() - failures.len(),
            tests.len()
        );
        assert!(failures.is_empty(), "{name}:\n{}", failures.join("\n"));
    }
}

#[test]
fn gemma3_tokenizer_round_trips() {
    let Some(dir) = real_models("gemma3_tokenizer_round_trips") else {
        return;
    };
    let path = dir.join("gemma-3-270m.gguf");
    let tokenizer = gguf_tokenizer(&path);
    for text in [
        "Hello world",
        "  leading spaces and\ttabs\n",
        "日本語のテキスト",
        "emoji 🙂 ok",
    ] {
        let ids = tokenizer.encode(text, false).unwrap();
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), text);
    }
    let _ = Tensor::zeros(1, DType::F32, &Device::Cpu);
}
