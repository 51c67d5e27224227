//! `graft vocab`: report (figures derived from llama.cpp's ids) and trim (tokenization of the
//! corpus unchanged, logits at kept tokens equal the untrimmed model's, bad input).

mod common;
use common::*;

use candle_core::{DType, Device, Tensor};
use graft_testkit::fixture;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Output;

fn write(path: &std::path::Path, rows: &[Value]) {
    let text: String = rows.iter().map(|r| r.to_string() + "\n").collect();
    std::fs::write(path, text).unwrap();
}

/// `graft vocab CMD --model M --corpus C --output OUT EXTRA…`.
fn run_vocab(cmd: &str, model: &Path, corpus: &Path, out: &Path, extra: &[&str]) -> Output {
    let (m, c, o) = (
        model.to_str().unwrap(),
        corpus.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let mut args = vec!["vocab", cmd, "--model", m, "--corpus", c, "--output", o];
    args.extend(extra);
    graft(&args)
}

/// The `tokens` field of `graft tokenize`'s rows.
fn token_strings(
    model: &std::path::Path,
    rows: &std::path::Path,
    out: &std::path::Path,
) -> Vec<Value> {
    let o = graft(&[
        "tokenize",
        "--model",
        model.to_str().unwrap(),
        "--input",
        rows.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--no-special",
        "--force",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["tokens"].clone())
        .collect()
}

/// Logits (T, V) of `ids` under the model at `path`.
fn logits(path: &std::path::Path, ids: &[u32]) -> Tensor {
    let source = graft_models::ModelSource::open(path, DType::F32, &Device::Cpu).unwrap();
    let model = source.build(DType::F32, &Device::Cpu).unwrap();
    let x = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    model.forward(&x, None, false).unwrap().squeeze(0).unwrap()
}

#[test]
fn trim_keeps_the_corpus_tokenization_and_the_logits_of_kept_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    let rows = [
        json!({"text": "the cat sat on the mat"}),
        json!({"text": "a cat and a hat"}),
    ];
    write(&corpus, &rows);
    let base = fixture("models/llama");
    let out = dir.path().join("trimmed");
    let o = run_vocab("trim", &base, &corpus, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    // An existing output is replaced only with --force.
    let again = run_vocab("trim", &base, &corpus, &out, &[]);
    assert_user_error(&again, &["exists", "--force"]);
    let forced = run_vocab("trim", &base, &corpus, &out, &["--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    let v = config["vocab_size"].as_u64().unwrap() as usize;
    assert!(v < 128, "vocabulary not trimmed: {v}");
    // The corpus tokenizes to the same token strings.
    let before = token_strings(&base, &corpus, &dir.path().join("a.jsonl"));
    let after = token_strings(&out, &corpus, &dir.path().join("b.jsonl"));
    assert_eq!(before, after);
    // The trimmed model's logits are the untrimmed model's at the kept tokens: the kept tokens
    // are the trimmed vocabulary's pieces, found in the untrimmed one by their strings.
    let old = graft_models::open_tokenizer(&base).unwrap().0;
    let new = graft_models::open_tokenizer(&out).unwrap().0;
    let kept: Vec<u32> = (0..v as u32)
        .map(|i| old.token_to_id(&new.inner.id_to_token(i).unwrap()).unwrap())
        .collect();
    assert!(kept.windows(2).all(|w| w[0] < w[1]), "old order kept");
    let text = "the cat sat on the mat";
    let (ids_old, ids_new) = (
        old.encode(text, true).unwrap(),
        new.encode(text, true).unwrap(),
    );
    assert_eq!(
        ids_old,
        ids_new
            .iter()
            .map(|&i| kept[i as usize])
            .collect::<Vec<_>>()
    );
    let full = logits(&base, &ids_old)
        .index_select(&Tensor::new(kept.as_slice(), &Device::Cpu).unwrap(), 1)
        .unwrap();
    let diff = (full - logits(&out, &ids_new))
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap();
    assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);

    // Bad input: exit 2, one line, nothing written.
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n").unwrap();
    let bad_out = dir.path().join("bad");
    let o = run_vocab("trim", &base, &empty, &bad_out, &[]);
    assert_user_error(&o, &["--corpus", "no words"]);
    assert!(!bad_out.exists());
}

#[test]
fn vocab_report_counts_words_tokens_and_byte_fallback() {
    // llama.cpp's llama-spm vectors: "ied 4 ½ months" is ▁i ed ▁ 4 ▁ ½ ▁months (the word "ied" is
    // cut in two; a lone ▁ belongs to no word), " this is 🦙.cpp" is ▁ ▁this ▁is ▁ and four
    // byte-fallback pieces for the llama, then . cpp (the word "🦙.cpp" is cut into six).
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    write(
        &corpus,
        &[
            json!({"text": "ied 4 ½ months"}),
            json!({"text": " this is 🦙.cpp"}),
        ],
    );
    let out = dir.path().join("report.json");
    let vocab = fixture("vocab/ggml-vocab-llama-spm.gguf");
    let o = run_vocab("report", &vocab, &corpus, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let r = &doc["tokenizers"][0]["report"];
    for (key, want) in [
        ("rows", 2),
        ("words", 7),
        ("tokens", 17),
        ("bytes", 32),
        ("split_words", 2),
        ("byte_fallback_tokens", 4),
        ("unknown_tokens", 0),
        ("vocabulary_used", 14),
        ("vocabulary_size", 32000),
    ] {
        assert_eq!(r[key], json!(want), "{key}");
    }
    assert!((r["tokens_per_word"].as_f64().unwrap() - 17.0 / 7.0).abs() < 1e-12);
    assert!((r["bytes_per_token"].as_f64().unwrap() - 32.0 / 17.0).abs() < 1e-12);
    // The table names the tokenizer.
    assert!(String::from_utf8_lossy(&o.stdout).contains("ggml-vocab-llama-spm.gguf"));

    // Bad input: exit 2, one line naming the file and field; nothing written.
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "{\"text\": \"  \"}\n").unwrap();
    let no_field = dir.path().join("nofield.jsonl");
    std::fs::write(&no_field, "{\"text\": \"a b\"}\n{\"body\": \"c\"}\n").unwrap();
    for (bad, needles) in [
        (&empty, vec!["--corpus", "no words"]),
        (&no_field, vec!["nofield.jsonl:2", "field `text`"]),
    ] {
        let report = dir.path().join("bad.json");
        let o = run_vocab("report", &vocab, &bad, &report, &[]);
        assert_user_error(&o, &needles);
        assert!(!report.exists());
    }
}

/// Row `i` of a safetensors tensor, as f32.
fn row(dir: &std::path::Path, name: &str, i: usize) -> Vec<f32> {
    let t = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    t[name].get(i).unwrap().to_vec1().unwrap()
}

#[test]
fn extend_appends_merges_and_initialises_rows_from_their_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    let rows: Vec<Value> = (0..6)
        .map(|_| json!({"text": "catamaran catamaran"}))
        .collect();
    write(&corpus, &rows);
    let base = fixture("models/llama");
    let out = dir.path().join("extended");
    let o = run_vocab("extend", &base, &corpus, &out, &["--add", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["vocab_size"], json!(131));
    // Old rows bit-identical, in the embeddings and the untied head.
    for name in ["model.embed_tokens.weight", "lm_head.weight"] {
        for i in [0usize, 5, 127] {
            assert_eq!(row(&base, name, i), row(&out, name, i), "{name} row {i}");
        }
    }
    // The first new token joins two neighbouring old pieces of "catamaran"; its row (FVT) is
    // their rows' mean.
    let old_tokens = token_strings(&base, &corpus, &dir.path().join("a.jsonl"));
    let new_tokens = token_strings(&out, &corpus, &dir.path().join("b.jsonl"));
    assert!(new_tokens[0].as_array().unwrap().len() < old_tokens[0].as_array().unwrap().len());
    let old = graft_models::open_tokenizer(&base).unwrap().0;
    let new = graft_models::open_tokenizer(&out).unwrap().0;
    let first = new.inner.id_to_token(128).unwrap();
    let pieces: Vec<String> = old_tokens[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let at = pieces
        .windows(2)
        .position(|w| format!("{}{}", w[0], w[1]) == first)
        .expect("the new token is two neighbouring old pieces");
    let (a, b) = (
        old.token_to_id(&pieces[at]).unwrap() as usize,
        old.token_to_id(&pieces[at + 1]).unwrap() as usize,
    );
    for name in ["model.embed_tokens.weight", "lm_head.weight"] {
        let (ra, rb, got) = (
            row(&base, name, a),
            row(&base, name, b),
            row(&out, name, 128),
        );
        for ((x, y), g) in ra.iter().zip(&rb).zip(&got) {
            assert!(
                (g - (x + y) / 2.0).abs() < 1e-6,
                "{name}: {g} vs mean of {x}, {y}"
            );
        }
    }

    // More merges than the corpus offers: exit 2, nothing written.
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "a a a\n").unwrap();
    let bad_out = dir.path().join("bad");
    let o = run_vocab("extend", &base, &short, &bad_out, &["--add", "50"]);
    assert_user_error(&o, &["--add 50", "supports only"]);
    assert!(!bad_out.exists());
}
