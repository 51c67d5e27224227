//! `graft train` on encoder-decoder models (the tiny T5 fixtures): seq2seq fine-tuning on
//! {inputs, targets} rows, T5 span corruption on {text} rows, LoRA on T5, and the bad-input errors.

mod common;
use common::*;

use std::path::{Path, PathBuf};

use graft_testkit::fixture;
use serde_json::json;

fn write_rows(path: &Path, rows: &[serde_json::Value]) {
    let text: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    std::fs::write(path, text.join("\n")).unwrap();
}

/// A toy task: copy the first word of the input (a learnable mapping for a tiny model).
fn copy_task(dir: &Path) -> PathBuf {
    let words = [
        "estate", "family", "house", "sister", "mother", "letter", "morning", "evening",
    ];
    let rows: Vec<_> = (0..32)
        .map(|i| {
            let (a, b) = (words[i % 8], words[(i * 3 + 1) % 8]);
            json!({"inputs": format!("first word: {a} {b}"), "targets": a})
        })
        .collect();
    let path = dir.join("copy.jsonl");
    write_rows(&path, &rows);
    path
}

fn austen_text_rows(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(fixture("../../data/pretrain/austen.eval.txt")).unwrap();
    let rows: Vec<_> = text
        .split("\n\n")
        .filter(|p| p.len() > 40)
        .take(16)
        .map(|p| json!({"text": p.chars().take(200).collect::<String>()}))
        .collect();
    let path = dir.join("text.jsonl");
    write_rows(&path, &rows);
    path
}

fn recipe(dir: &Path, model: &str, train: &Path, extra: &str) -> PathBuf {
    let path = dir.join("recipe.toml");
    let text = format!(
        "[model]\npath = {:?}\nattention_dropout = 0.0\n[data]\ntrain = {:?}\nmax_seq_len = 48\n{extra}\n[objective]\nkind = \"lm\"\n\
         [train]\nbatch_size = 8\nlr = 3e-3\nschedule = \"constant\"\nlog_every = 1\nsave_every = 0\nkeep_last = 0\nsteps = 20\n",
        fixture(&format!("models/{model}")).display().to_string(),
        train.display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn seq2seq_fine_tuning_lowers_the_loss_and_final_scores_like_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let train = copy_task(dir.path());
    let r = recipe(dir.path(), "t5_v11", &train, "");
    let out = dir.path().join("run");
    let rows = train_ok(&r, &out, &[]);
    let (first, last) = (
        rows[0]["loss"].as_f64().unwrap(),
        rows[19]["loss"].as_f64().unwrap(),
    );
    assert!(last < first * 0.5, "loss should fall: {first} → {last}");
    // final/ is an HF T5 directory; graft scores the training rows far better with it than
    // with the starting model.
    let nll = |model: &Path| -> f64 {
        let o = graft(&[
            "score",
            "--model",
            model.to_str().unwrap(),
            "--input",
            train.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let rows: Vec<serde_json::Value> = stdout(&o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let (sum, n) = rows.iter().fold((0.0, 0.0), |(s, n), r| {
            (
                s - r["sum_logprob"].as_f64().unwrap(),
                n + r["num_tokens"].as_f64().unwrap(),
            )
        });
        sum / n
    };
    let (before, after) = (nll(&fixture("models/t5_v11")), nll(&out.join("final")));
    assert!(
        after < before * 0.5,
        "per-token NLL of the training rows: {before} → {after}"
    );
}

#[test]
fn span_corruption_pretraining_and_lora_on_t5() {
    let dir = tempfile::tempdir().unwrap();
    let train = austen_text_rows(dir.path());
    let r = recipe(
        dir.path(),
        "t5",
        &train,
        "[data.span_corruption]\nnoise_density = 0.15\nmean_noise_span_length = 3.0\n",
    );
    let rows = train_ok(&r, &dir.path().join("span"), &[]);
    let (first, last) = (
        rows[0]["loss"].as_f64().unwrap(),
        rows[19]["loss"].as_f64().unwrap(),
    );
    assert!(
        last < first,
        "span-corruption loss should fall: {first} → {last}"
    );

    let copy = copy_task(dir.path());
    let r = recipe(
        dir.path(),
        "mt5",
        &copy,
        "[adapter]\nkind = \"lora\"\nr = 4\nalpha = 8\ntarget_modules = [\"q\", \"v\"]\n",
    );
    let out = dir.path().join("lora");
    let rows = train_ok(&r, &out, &[]);
    assert!(rows[19]["loss"].as_f64().unwrap() < rows[0]["loss"].as_f64().unwrap());
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("final/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["task_type"], "SEQ_2_SEQ_LM");
    let o = graft(&[
        "score",
        "--model",
        fixture("models/mt5").to_str().unwrap(),
        "--adapter",
        out.join("final").to_str().unwrap(),
        "--input",
        copy.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn seq2seq_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    // A tokenizer without sentinels cannot do span corruption.
    let model = dir.path().join("t5");
    copy_dir(&fixture("models/t5"), &model);
    std::fs::copy(
        fixture("models/llama/tokenizer.json"),
        model.join("tokenizer.json"),
    )
    .unwrap();
    let train = austen_text_rows(dir.path());
    let r = recipe(dir.path(), "t5", &train, "[data.span_corruption]\n");
    let text = std::fs::read_to_string(&r).unwrap().replace(
        &fixture("models/t5").display().to_string(),
        &model.display().to_string(),
    );
    std::fs::write(&r, text).unwrap();
    let o = graft(&[
        "train",
        r.to_str().unwrap(),
        "--output",
        dir.path().join("a").to_str().unwrap(),
    ]);
    assert_user_error(&o, &["tokenizer.json", "sentinel"]);

    // Seq2seq rows without targets name file, line and field.
    let bad = dir.path().join("bad.jsonl");
    write_rows(
        &bad,
        &[
            json!({"inputs": "a", "targets": "b"}),
            json!({"inputs": "a"}),
        ],
    );
    let r = recipe(dir.path(), "t5", &bad, "");
    let o = graft(&[
        "train",
        r.to_str().unwrap(),
        "--output",
        dir.path().join("b").to_str().unwrap(),
    ]);
    assert_user_error(&o, &["bad.jsonl:2", "targets"]);
}

#[test]
fn dpo_on_t5_starts_at_ln2_and_separates_the_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let words = ["estate", "family", "house", "sister", "mother", "letter"];
    let rows: Vec<_> = (0..12)
        .map(|i| {
            json!({"prompt": format!("first word: {} {}", words[i % 6], words[(i + 1) % 6]),
                        "chosen": words[i % 6], "rejected": words[(i + 1) % 6]})
        })
        .collect();
    let train = dir.path().join("pairs.jsonl");
    write_rows(&train, &rows);
    let r = recipe(dir.path(), "t5_v11", &train, "");
    let text = std::fs::read_to_string(&r)
        .unwrap()
        .replace("kind = \"lm\"", "kind = \"dpo\"\nbeta = 0.1");
    std::fs::write(&r, text).unwrap();
    let m = train_ok(&r, &dir.path().join("dpo"), &[]);
    let first = m[0]["loss"].as_f64().unwrap();
    assert!(
        (first - std::f64::consts::LN_2).abs() < 1e-4,
        "step 0 loss {first}"
    );
    assert!(m[19]["loss"].as_f64().unwrap() < first, "{}", m[19]);
    assert!(
        m[19]["rewards/accuracies"].as_f64().unwrap() > 0.5,
        "{}",
        m[19]
    );
}

#[test]
fn ul2_mixture_trains_t5_and_a_decoder_in_causal_form() {
    let dir = tempfile::tempdir().unwrap();
    let text = austen_text_rows(dir.path());
    // T5: seq2seq rows from the seven UL2 denoisers.
    let r = recipe(dir.path(), "t5", &text, "[data.ul2]\n");
    let m = train_ok(&r, &dir.path().join("t5-ul2"), &[]);
    assert!(
        m[19]["loss"].as_f64().unwrap() < m[0]["loss"].as_f64().unwrap(),
        "{}",
        m[19]
    );

    // A fresh Llama with sentinels (graft init-model): UL2 in the causal-LM form.
    let cfg = dir.path().join("llama.json");
    std::fs::write(&cfg, json!({"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": true}).to_string()).unwrap();
    let model = dir.path().join("llama-init");
    let o = graft(&[
        "init-model",
        "--config",
        cfg.to_str().unwrap(),
        "--text",
        fixture("../../data/pretrain/austen.eval.txt")
            .to_str()
            .unwrap(),
        "--vocab-size",
        "600",
        "--sentinels",
        "20",
        "--output",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = recipe(
        dir.path(),
        "t5",
        &text,
        "[data.ul2]\nrates = [1, 1, 1, 1, 1, 1, 2]\n",
    );
    let t = std::fs::read_to_string(&r).unwrap().replace(
        &fixture("models/t5").display().to_string(),
        &model.display().to_string(),
    );
    std::fs::write(&r, t).unwrap();
    let m = train_ok(&r, &dir.path().join("llama-ul2"), &[]);
    assert!(
        m[19]["loss"].as_f64().unwrap() < m[0]["loss"].as_f64().unwrap(),
        "{}",
        m[19]
    );

    // Bad mixture settings are named.
    let r = recipe(dir.path(), "t5", &text, "[data.ul2]\nrates = [1, 2]\n");
    let o = graft(&[
        "train",
        r.to_str().unwrap(),
        "--output",
        dir.path().join("bad").to_str().unwrap(),
    ]);
    assert_user_error(&o, &["ul2.rates"]);
}

#[test]
fn kto_on_t5_with_seq2seq_kl_rows() {
    let dir = tempfile::tempdir().unwrap();
    let words = ["estate", "family", "house", "sister", "mother", "letter"];
    let rows: Vec<_> = (0..12)
        .map(|i| {
            json!({"prompt": format!("first word: {} {}", words[i % 6], words[(i + 1) % 6]),
                        "completion": words[(i + i % 2) % 6], "label": i % 2 == 0})
        })
        .collect();
    let train = dir.path().join("kto.jsonl");
    write_rows(&train, &rows);
    let r = recipe(dir.path(), "t5_v11", &train, "");
    let text = std::fs::read_to_string(&r)
        .unwrap()
        .replace("kind = \"lm\"", "kind = \"kto\"\nbeta = 0.1");
    std::fs::write(&r, text).unwrap();
    let m = train_ok(&r, &dir.path().join("kto"), &[]);
    // Policy = reference at step 0: every reward is 0, so the loss is 1 - sigmoid(0) = 0.5.
    let first = m[0]["loss"].as_f64().unwrap();
    assert!((first - 0.5).abs() < 1e-4, "step 0 loss {first}");
    assert!(m[19]["loss"].as_f64().unwrap() < first, "{}", m[19]);
}
