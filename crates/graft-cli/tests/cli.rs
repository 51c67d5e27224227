//! The CLI contract end to end on the tiny llama fixture (tokenizer, chat template and reference
//! outputs from transformers, see tools/fixtures/make_decoder_fixtures.py).

mod common;
use common::*;

use graft_testkit::{fixture, read_json};
use serde_json::Value;

fn model() -> String {
    fixture("models/llama").display().to_string()
}

/// Runs `graft score` on the rows of score_expected.jsonl — as text, or as the token ids transformers
/// produced — and checks ids and log-probs.
fn check_score(model_path: &str, by_text: bool, tol: f64) {
    let dir = tempfile::tempdir().unwrap();
    let expected: Vec<Value> =
        std::fs::read_to_string(fixture("models/llama/score_expected.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let input = dir.path().join("in.jsonl");
    let rows: Vec<String> = expected
        .iter()
        .map(|e| match by_text {
            true => serde_json::json!({"text": e["text"]}).to_string(),
            false => serde_json::json!({"input_ids": e["input_ids"]}).to_string(),
        })
        .collect();
    std::fs::write(&input, rows.join("\n")).unwrap();
    let output = dir.path().join("out.jsonl");
    let o = graft(&[
        "score",
        "--model",
        model_path,
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g["input_ids"], e["input_ids"], "token ids of {}", e["text"]);
        let (gl, el) = (
            g["token_logprobs"].as_array().unwrap(),
            e["token_logprobs"].as_array().unwrap(),
        );
        assert_eq!(gl.len(), el.len());
        assert!(gl[0].is_null());
        for (a, b) in gl.iter().zip(el).skip(1) {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!(
                (a - b).abs() <= tol,
                "{}: {a} vs transformers {b}",
                e["text"]
            );
        }
        assert_eq!(g["num_tokens"].as_u64().unwrap() as usize, gl.len() - 1);
        assert!(
            (g["sum_logprob"].as_f64().unwrap() - e["sum_logprob"].as_f64().unwrap()).abs() < 1e-3
        );
    }
}

#[test]
fn score_matches_transformers() {
    check_score(&model(), true, 1e-4);
}

#[test]
fn score_from_gguf_matches_transformers() {
    // The same model converted by llama.cpp's convert_hf_to_gguf.py (f32), q/k rows un-permuted on
    // load. Ids are given: the converter stores placeholder scores (-1000) for this tiny tokenizer, so
    // its SentencePiece merges cannot be rebuilt; real GGUF tokenizers are checked in real_models.rs.
    check_score(
        &fixture("models/llama.gguf").display().to_string(),
        false,
        1e-4,
    );
}

#[test]
fn score_accepts_input_ids_and_writes_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"input_ids\": [1, 5, 7, 9]}\n\n{\"input_ids\": [3]}\n",
    )
    .unwrap();
    let o = graft(&[
        "score",
        "--model",
        &model(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["num_tokens"], 3);
    assert_eq!(lines[1]["token_logprobs"], serde_json::json!([null]));
}

#[test]
fn malformed_jsonl_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    std::fs::write(&input, "{\"text\": \"fine\"}\n{\"text\": \"broken\"\n").unwrap();
    let output = dir.path().join("out.jsonl");
    let o = graft(&[
        "score",
        "--model",
        &model(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert_user_error(&o, &["bad.jsonl:2", "invalid JSON"]);
    assert!(!output.exists(), "nothing half-written");
}

#[test]
fn bad_fields_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "{\"txt\": \"x\"}",
            vec!["rows.jsonl:1", "no `text` or `input_ids`"],
        ),
        (
            "{\"input_ids\": [1, 100000]}",
            vec!["rows.jsonl:1", "input_ids[1]", "outside the vocabulary"],
        ),
        ("{\"text\": 3}", vec!["rows.jsonl:1", "field `text`"]),
        (
            "{\"inputs\": \"a\", \"targets\": \"b\"}",
            vec!["rows.jsonl:1", "encoder-decoder"],
        ),
    ];
    for (row, needles) in cases {
        let input = dir.path().join("rows.jsonl");
        std::fs::write(&input, row).unwrap();
        let o = graft(&[
            "score",
            "--model",
            &model(),
            "--input",
            input.to_str().unwrap(),
        ]);
        assert_user_error(&o, &needles);
    }
}

#[test]
fn a_panic_is_one_line_and_exit_70() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_graft"))
        .args(["--help"])
        .env("GRAFT_TEST_PANIC", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(70), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("internal error: test panic second line at "),
        "{err}"
    );
    assert!(!err.contains("backtrace"), "{err}");
}

#[test]
fn missing_model_is_a_one_line_error() {
    let o = graft(&["generate", "--model", "/no/such/model", "--prompt", "hi"]);
    assert_user_error(&o, &["/no/such/model"]);
}

fn check_chat(model_path: &str, check_ids: bool) {
    let expected = read_json("models/llama/chat_expected.json");
    let o = graft(&[
        "generate",
        "--model",
        model_path,
        "--system",
        "You are terse.",
        "--chat",
        "Hi there",
        "--max-new-tokens",
        &expected["greedy_new_ids"]
            .as_array()
            .unwrap()
            .len()
            .to_string(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(got["prompt"], expected["prompt"], "chat template rendering");
    if !check_ids {
        return;
    }
    assert_eq!(
        got["prompt_ids"], expected["prompt_ids"],
        "prompt tokenization"
    );
    // transformers' greedy generate stops at EOS too; compare the common prefix it produced.
    let want = expected["greedy_new_ids"].as_array().unwrap();
    let have = got["completion_ids"].as_array().unwrap();
    assert_eq!(&have[..], &want[..have.len()], "greedy ids");
}

#[test]
fn generate_chat_matches_transformers_greedy() {
    check_chat(&model(), true);
}

#[test]
fn generate_chat_template_from_gguf_metadata() {
    check_chat(&fixture("models/llama.gguf").display().to_string(), false);
}

/// A Q8_0 GGUF, kept quantized by default: with f32 activations generation equals the
/// dequantized model's greedy ids; with 8-bit activations (the default) it runs through the
/// integer kernels.
#[test]
fn generate_kept_quantized_with_f32_activations_equals_dequantized() {
    let path = fixture("models/llama-q8_0.gguf").display().to_string();
    let generate = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            &path,
            "--prompt",
            "the",
            "--max-new-tokens",
            "12",
            "--json",
        ];
        args.extend_from_slice(extra);
        graft(&args)
    };
    let run = |extra: &[&str]| {
        let o = generate(extra);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str::<Value>(stdout(&o).trim()).unwrap()["completion_ids"].clone()
    };
    let dense = run(&["--dequantize"]);
    assert_eq!(run(&["--f32-activations"]), dense);
    assert_eq!(run(&["--keep-quantized", "--f32-activations"]), dense);
    assert_eq!(run(&[]).as_array().map(Vec::len), Some(12));
    let o = generate(&["--dequantize", "--f32-activations"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "--f32-activations has no effect on a dequantized model"
    );
}

/// `generate --input`: rows decode together in one batch, and each row's greedy response is
/// the one it gets in a file of its own.
#[test]
fn generate_input_rows_batched_equal_rows_alone() {
    let dir = tempfile::tempdir().unwrap();
    let model = model();
    let prompts = ["the cat sat", "a", "one two three four five six"];
    let run = |rows: &[&str], name: &str| {
        let input = dir.path().join(format!("{name}.jsonl"));
        let lines: Vec<String> = rows
            .iter()
            .map(|p| serde_json::json!({ "prompt": p }).to_string())
            .collect();
        std::fs::write(&input, lines.join("\n")).unwrap();
        let output = dir.path().join(format!("{name}.out.jsonl"));
        let o = graft(&[
            "generate",
            "--model",
            &model,
            "--input",
            input.to_str().unwrap(),
            "--max-new-tokens",
            "9",
            "--output",
            output.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read_to_string(&output)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["responses"].clone())
            .collect::<Vec<_>>()
    };
    let together = run(&prompts, "all");
    assert_eq!(together.len(), 3);
    for (i, p) in prompts.iter().enumerate() {
        assert_eq!(together[i], run(&[p], &format!("row{i}"))[0], "row {i}");
    }
}

#[test]
fn sampling_is_reproducible_with_a_seed() {
    let run = |seed: &str| {
        let o = graft(&[
            "generate",
            "--model",
            &model(),
            "--prompt",
            "the",
            "--temperature",
            "1.0",
            "--seed",
            seed,
            "--max-new-tokens",
            "12",
            "--json",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str::<Value>(stdout(&o).trim()).unwrap()["completion_ids"].clone()
    };
    assert_eq!(run("5"), run("5"));
}

#[test]
fn quickstart_runs_end_to_end() {
    // The full default takes minutes in release; the same pipeline with a handful of steps.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("qs");
    let args = [
        "quickstart",
        "--output",
        out.to_str().unwrap(),
        "--pretrain-steps",
        "3",
        "--sft-steps",
        "2",
        "--vocab-size",
        "600",
    ];
    let o = graft(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("5/5"));
    for f in [
        "base/tokenizer.json",
        "pretrain/final/model.safetensors",
        "sft/final/model.safetensors",
        "sft/loss.png",
        "sft/manifest.json",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    // A rerun replaces its own earlier output; a folder that is not quickstart output is refused.
    assert!(graft(&args).status.success());
    let other = dir.path().join("mine");
    std::fs::create_dir_all(&other).unwrap();
    let o = graft(&["quickstart", "--output", other.to_str().unwrap()]);
    assert_user_error(&o, &["not a quickstart folder"]);
}

#[test]
fn convert_gguf_to_hf_dir_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("from-gguf");
    let o = graft(&[
        "convert",
        &fixture("models/llama.gguf").display().to_string(),
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(out.join(file).exists(), "{file} written");
    }
    // The written directory scores like transformers' reference of the original HF model.
    check_score(out.to_str().unwrap(), false, 1e-4);
    // …and carries the chat template from the GGUF metadata.
    check_chat(out.to_str().unwrap(), false);
    // Never overwrite: a second conversion to the same place is a one-line error.
    let o = graft(&[
        "convert",
        &fixture("models/llama.gguf").display().to_string(),
        out.to_str().unwrap(),
    ]);
    assert_user_error(&o, &["already exists"]);
}

#[test]
fn convert_to_bf16_halves_the_weights() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bf16");
    let o = graft(&[
        "convert",
        &model(),
        out.to_str().unwrap(),
        "--dtype",
        "bf16",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f32_size = std::fs::metadata(fixture("models/llama/model.safetensors"))
        .unwrap()
        .len();
    let bf16_size = std::fs::metadata(out.join("model.safetensors"))
        .unwrap()
        .len();
    assert!(bf16_size * 2 < f32_size + 8192, "{bf16_size} vs {f32_size}");
    // bf16 weights, bf16 compute: the same argmax-level behaviour, log-probs within bf16 precision.
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"input_ids\": [1, 5, 7, 9, 11, 13]}\n").unwrap();
    let score = |m: &str, dtype: &str| -> Vec<f64> {
        let o = graft(&[
            "score",
            "--model",
            m,
            "--input",
            input.to_str().unwrap(),
            "--dtype",
            dtype,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        v["token_logprobs"].as_array().unwrap()[1..]
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let (a, b) = (score(&model(), "f32"), score(out.to_str().unwrap(), "bf16"));
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 0.1, "f32 {x} vs bf16 {y}");
    }
}

#[test]
fn an_existing_output_needs_force_and_an_input_is_never_an_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rows.jsonl");
    std::fs::write(&input, "{\"text\": \"Hello there\"}\n").unwrap();
    let out = dir.path().join("scored.jsonl");
    let m = model();
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    let score =
        |extra: &[&str]| graft(&[&["score", "--model", &m, "--input", i][..], extra].concat());
    assert!(score(&["--output", o]).status.success());
    std::fs::write(&out, "keep me").unwrap();
    assert_user_error(&score(&["--output", o]), &["scored.jsonl", "--force"]);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "keep me",
        "nothing replaced"
    );
    assert!(score(&["--output", o, "--force"]).status.success());
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("token_logprobs"));
    // The input as output, however spelled, even with --force.
    let same = format!("{}/./rows.jsonl", dir.path().display());
    assert_user_error(&score(&["--output", &same, "--force"]), &["also an input"]);
    assert!(std::fs::read_to_string(&input)
        .unwrap()
        .contains("Hello there"));
}
