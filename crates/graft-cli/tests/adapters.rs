//! Adapters through the CLI: `--adapter` on PEFT-made adapters, `convert --merge-adapter`, and LoRA /
//! DoRA training whose `final/` is a PEFT directory.

mod common;
use common::*;

use std::path::Path;

use graft_testkit::{fixture, read_json};
use serde_json::Value;

/// `graft score` of the fixture's input ids with `extra` args; next-token log-probs per row.
fn score(dir: &Path, model: &str, extra: &[&str]) -> Vec<Vec<f64>> {
    let expected = read_json("adapters/lora_qv/expected.json");
    let rows: Vec<String> = expected["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| serde_json::json!({"input_ids": r}).to_string())
        .collect();
    let input = dir.join("in.jsonl");
    std::fs::write(&input, rows.join("\n")).unwrap();
    let mut args = vec![
        "score",
        "--model",
        model,
        "--input",
        input.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = graft(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["token_logprobs"].as_array().unwrap()[1..]
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// PEFT's reference next-token log-probs from the fixture's full log-prob table.
fn reference(case: &str) -> Vec<Vec<f64>> {
    let e = read_json(&format!("adapters/{case}/expected.json"));
    let ids = e["input_ids"].as_array().unwrap();
    ids.iter()
        .enumerate()
        .map(|(b, row)| {
            let row = row.as_array().unwrap();
            (1..row.len())
                .map(|t| {
                    e["logprobs"][b][t - 1][row[t].as_u64().unwrap() as usize]
                        .as_f64()
                        .unwrap()
                })
                .collect()
        })
        .collect()
}

fn assert_rows_close(a: &[Vec<f64>], b: &[Vec<f64>], tol: f64, what: &str) {
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        assert!((x - y).abs() <= tol, "{what}: {x} vs {y}");
    }
}

#[test]
fn score_with_peft_adapters_and_merged_conversions() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixture("models/llama").display().to_string();
    for case in ["lora_qv", "rslora_all", "dora_qv", "lora_saved"] {
        let adapter = fixture(&format!("adapters/{case}")).display().to_string();
        let with = score(dir.path(), &base, &["--adapter", &adapter]);
        assert_rows_close(&with, &reference(case), 1e-4, case);
        let merged = dir.path().join(format!("merged-{case}"));
        let o = graft(&[
            "convert",
            &base,
            merged.to_str().unwrap(),
            "--merge-adapter",
            &adapter,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_rows_close(
            &score(dir.path(), merged.to_str().unwrap(), &[]),
            &with,
            1e-4,
            &format!("{case} merged"),
        );
    }
    let o = graft(&[
        "score",
        "--model",
        &base,
        "--input",
        "/dev/null",
        "--adapter",
        "/no/adapter",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/no/adapter"), "{}", stderr(&o));
}

#[test]
fn lora_and_dora_training_write_peft_adapters() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixture("../../data/pretrain/austen.eval.txt")).unwrap();
    let rows: Vec<String> = text
        .split("\n\n")
        .filter(|p| p.len() > 40)
        .take(16)
        .map(|p| serde_json::json!({"text": &p[..p.len().min(200)]}).to_string())
        .collect();
    let train = dir.path().join("train.jsonl");
    std::fs::write(&train, rows.join("\n")).unwrap();
    let base = fixture("models/llama");
    for (kind, extra) in [
        ("lora", ""),
        ("dora", ""),
        (
            "lora",
            "modules_to_save = [\"lm_head\", \"embed_tokens\"]\n",
        ),
    ] {
        let saved = !extra.is_empty();
        let recipe = dir.path().join(format!("{kind}{saved}.toml"));
        std::fs::write(&recipe, format!(
            "[model]\npath = {:?}\n[adapter]\nkind = \"{kind}\"\nr = 4\nalpha = 8\ndropout = 0.1\ntarget_modules = \"all-linear\"\n{extra}\
             [data]\ntrain = {:?}\nmax_seq_len = 64\npacking = true\n[objective]\nkind = \"lm\"\n\
             [train]\nsteps = 12\nbatch_size = 4\nlr = 1e-2\nschedule = \"constant\"\nlog_every = 1\nsave_every = 6\n",
            base.display().to_string(), train.display().to_string())).unwrap();
        let out = dir.path().join(format!("{kind}{saved}"));
        let o = graft(&[
            "train",
            recipe.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{kind}: {}", stderr(&o));
        let metrics: Vec<Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let (first, last) = (
            metrics[0]["loss"].as_f64().unwrap(),
            metrics[11]["loss"].as_f64().unwrap(),
        );
        assert!(last < first - 0.3, "{kind}: {first} → {last}");
        // final/ and checkpoints are PEFT directories that load back with --adapter.
        let cfg: Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("final/adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(cfg["peft_type"], "LORA");
        assert_eq!(cfg["use_dora"], kind == "dora");
        assert!(out.join("checkpoint-6/adapter_model.safetensors").exists());
        if saved {
            // The trained copies of the head and embeddings are saved under PEFT's keys.
            let t = candle_core::safetensors::load(
                out.join("final/adapter_model.safetensors"),
                &candle_core::Device::Cpu,
            )
            .unwrap();
            assert!(
                t.contains_key("base_model.model.lm_head.weight"),
                "{:?}",
                t.keys()
            );
            assert!(t.contains_key("base_model.model.model.embed_tokens.weight"));
            assert_eq!(
                cfg["modules_to_save"],
                serde_json::json!(["lm_head", "embed_tokens"])
            );
        }
        let input = dir.path().join("s.jsonl");
        std::fs::write(&input, "{\"text\": \"Anne was sorry.\"}").unwrap();
        let o = graft(&[
            "score",
            "--model",
            base.to_str().unwrap(),
            "--adapter",
            out.join("final").to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
}

#[test]
fn qlora_fine_tunes_smollm2_from_its_gguf() {
    // The bar: LoRA on SmolLM2-135M-Instruct with its Q4_1/Q8_0 GGUF weights kept quantized.
    let Some(models) = graft_testkit::real_models("qlora_fine_tunes_smollm2_from_its_gguf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("qlora.toml");
    std::fs::write(&recipe, format!(
        "[model]\npath = {:?}\nquantized = true\n[adapter]\nkind = \"lora\"\nr = 8\nalpha = 16\ntarget_modules = [\"q_proj\", \"v_proj\"]\n\
         [data]\ntrain = {:?}\nmax_seq_len = 96\n[objective]\nkind = \"sft\"\n[train]\nsteps = 4\nbatch_size = 2\nlr = 1e-3\nlog_every = 1\n",
        models.join("smollm2-135m-instruct.gguf").display().to_string(),
        fixture("../../data/chat/quickstart.jsonl").display().to_string())).unwrap();
    let out = dir.path().join("run");
    let rows = train_ok(&recipe, &out, &[]);
    assert!(rows
        .iter()
        .all(|r| r["loss"].as_f64().is_some_and(f64::is_finite)));
    assert!(out.join("final/adapter_model.safetensors").exists());
}

#[test]
fn dpo_with_lora_learns_the_preference() {
    // Preference rows (plain and conversational); DPO with a LoRA adapter on the tiny llama: the
    // chosen responses gain on the rejected ones and TRL's reward metrics are logged.
    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    for (p, c, r) in [
        ("the cat", " sat.", " ran off fast."),
        ("a dog", " slept.", " barked loud."),
        ("the fox", " hid.", " jumped up."),
    ] {
        rows.push(serde_json::json!({"prompt": p, "chosen": c, "rejected": r}).to_string());
    }
    rows.push(serde_json::json!({"prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "hello."}], "rejected": [{"role": "assistant", "content": "go away."}]}).to_string());
    let train = dir.path().join("prefs.jsonl");
    std::fs::write(&train, rows.join("\n")).unwrap();
    let recipe = dir.path().join("dpo.toml");
    std::fs::write(&recipe, format!(
        "[model]\npath = {:?}\n[adapter]\nkind = \"lora\"\nr = 4\nalpha = 8\ntarget_modules = \"all-linear\"\n[data]\ntrain = {:?}\neval = {:?}\nmax_seq_len = 64\n\
         [objective]\nkind = \"dpo\"\nbeta = 0.1\n[train]\nsteps = 15\nbatch_size = 4\nlr = 5e-3\nschedule = \"constant\"\nlog_every = 1\n",
        fixture("models/llama").display().to_string(), train.display().to_string(), train.display().to_string())).unwrap();
    let out = dir.path().join("run");
    let o = graft(&[
        "train",
        recipe.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--set",
        "train.eval_every=5",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: Vec<Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        (m[0]["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-4,
        "step 0: policy = reference, loss = ln 2"
    );
    // Held-out evaluation reports the objective and its reward metrics.
    assert!(
        (m[0]["eval_loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-4,
        "{}",
        m[0]
    );
    let final_eval = m.last().unwrap();
    assert!(
        final_eval["eval_rewards/accuracies"].as_f64().unwrap() >= 0.75,
        "{final_eval}"
    );
    let last = &m[14];
    assert!(last["loss"].as_f64().unwrap() < 0.6, "{last}");
    assert!(
        last["rewards/margins"].as_f64().unwrap() > 0.0
            && last["rewards/accuracies"].as_f64().unwrap() >= 0.75,
        "{last}"
    );
    // Identical or empty responses name the row and field.
    for (bad, needle) in [
        (
            "{\"prompt\": \"a\", \"chosen\": \" b\", \"rejected\": \" b\"}",
            "identical",
        ),
        (
            "{\"prompt\": \"a\", \"chosen\": \"\", \"rejected\": \" b\"}",
            "empty response",
        ),
    ] {
        let path = dir.path().join("bad.jsonl");
        std::fs::write(&path, format!("{}\n{bad}\n", rows[0])).unwrap();
        let o = graft(&[
            "train",
            recipe.to_str().unwrap(),
            "--output",
            dir.path().join("z").to_str().unwrap(),
            "--set",
            &format!("data.train={:?}", path.display().to_string()),
        ]);
        assert!(
            o.status.code() == Some(2)
                && stderr(&o).contains("bad.jsonl:2")
                && stderr(&o).contains(needle),
            "{}",
            stderr(&o)
        );
    }
    // Packing is refused for pairs; SFT rows are refused by a preference objective.
    let o = graft(&[
        "train",
        recipe.to_str().unwrap(),
        "--output",
        dir.path().join("x").to_str().unwrap(),
        "--set",
        "data.packing=true",
    ]);
    assert!(
        o.status.code() == Some(2) && stderr(&o).contains("packing"),
        "{}",
        stderr(&o)
    );
    let sft = dir.path().join("sft.jsonl");
    std::fs::write(&sft, "{\"text\": \"plain text\"}\n").unwrap();
    let o = graft(&[
        "train",
        recipe.to_str().unwrap(),
        "--output",
        dir.path().join("y").to_str().unwrap(),
        "--set",
        &format!("data.train={:?}", sft.display().to_string()),
    ]);
    assert!(
        o.status.code() == Some(2)
            && stderr(&o).contains("sft.jsonl:1")
            && stderr(&o).contains("preference rows"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn kto_trains_on_labelled_rows() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<String> = [
        ("the cat", " sat.", true),
        ("a dog", " barked loud.", false),
        ("the fox", " hid.", true),
        ("a bird", " fell down.", false),
    ]
    .iter()
    .map(|(p, c, l)| serde_json::json!({"prompt": p, "completion": c, "label": l}).to_string())
    .collect();
    let train = dir.path().join("kto.jsonl");
    std::fs::write(&train, rows.join("\n")).unwrap();
    let recipe = dir.path().join("kto.toml");
    std::fs::write(&recipe, format!(
        "[model]\npath = {:?}\n[adapter]\nkind = \"lora\"\nr = 4\nalpha = 8\ntarget_modules = [\"q_proj\", \"v_proj\"]\n[data]\ntrain = {:?}\nmax_seq_len = 64\n\
         [objective]\nkind = \"kto\"\n[train]\nsteps = 6\nbatch_size = 4\nlr = 5e-3\nlog_every = 1\n",
        fixture("models/llama").display().to_string(), train.display().to_string())).unwrap();
    let out = dir.path().join("run");
    let m = train_ok(&recipe, &out, &[]);
    assert!(
        (m[0]["loss"].as_f64().unwrap() - 0.5).abs() < 1e-4,
        "step 0: policy = reference, loss = 1 − σ(0)"
    );
    assert!(
        m[5]["loss"].as_f64().unwrap() < 0.5 && m[5]["kl"].as_f64().is_some(),
        "{}",
        m[5]
    );
    // A row without its label is named.
    std::fs::write(&train, "{\"prompt\": \"a\", \"completion\": \" b\"}\n").unwrap();
    let o = graft(&[
        "train",
        recipe.to_str().unwrap(),
        "--output",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(
        o.status.code() == Some(2)
            && stderr(&o).contains("kto.jsonl:1")
            && stderr(&o).contains("label"),
        "{}",
        stderr(&o)
    );
}
