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

#[test]
fn qlora_on_an_nf4_base_trains_and_scores() {
    // An HF model quantized to NF4 (+ double quantization) at load, LoRA on every linear: the loss
    // falls; the adapter scores on the same NF4 base (`--nf4`); bad settings are named.
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("qlora.toml");
    let text = |quantized: &str, model: &std::path::Path| {
        format!(
            "[model]\npath = {:?}\nquantized = {quantized}\n[adapter]\nkind = \"lora\"\nr = 8\nalpha = 16\ntarget_modules = \"all-linear\"\n\
             [data]\ntrain = {:?}\nmax_seq_len = 48\npacking = true\n[objective]\nkind = \"lm\"\n[train]\nsteps = 12\nbatch_size = 4\nlr = 1e-2\nschedule = \"constant\"\nlog_every = 1\nsave_every = 0\n",
            model.display().to_string(),
            fixture("../../data/pretrain/austen.eval.txt").display().to_string()
        )
    };
    std::fs::write(&recipe, text("\"nf4\"", &fixture("models/llama_h64"))).unwrap();
    let out = dir.path().join("run");
    let rows = train_ok(&recipe, &out, &[]);
    let losses: Vec<f64> = rows.iter().filter_map(|r| r["loss"].as_f64()).collect();
    assert!(
        losses.last().unwrap() < &(losses[0] - 0.5),
        "loss {} → {}",
        losses[0],
        losses.last().unwrap()
    );
    let input = dir.path().join("rows.jsonl");
    std::fs::write(
        &input,
        "{\"text\": \"It is a truth universally acknowledged.\"}\n",
    )
    .unwrap();
    let o = graft(&[
        "score",
        "--model",
        fixture("models/llama_h64").to_str().unwrap(),
        "--nf4",
        "--adapter",
        out.join("final").to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    std::fs::write(&recipe, text("\"nf3\"", &fixture("models/llama_h64"))).unwrap();
    let o = graft(&[
        "train",
        recipe.to_str().unwrap(),
        "--output",
        dir.path().join("b").to_str().unwrap(),
    ]);
    assert_user_error(&o, &["model.quantized", "nf3"]);
    std::fs::write(&recipe, text("\"nf4\"", &fixture("models/llama-q8_0.gguf"))).unwrap();
    let o = graft(&[
        "train",
        recipe.to_str().unwrap(),
        "--output",
        dir.path().join("c").to_str().unwrap(),
    ]);
    assert_user_error(&o, &["llama-q8_0.gguf", "NF4"]);
}

#[test]
fn sltrain_pretrains_and_merges() {
    // SLTrain on the tiny llama: every linear layer becomes low-rank + fixed-support sparse (the
    // base weight unused), embeddings and head trained in full; the loss falls, and the merged HF
    // model scores exactly as the adapter on its base.
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("sltrain.toml");
    std::fs::write(&recipe, format!(
        "[model]\npath = {:?}\n[adapter]\nkind = \"sltrain\"\nr = 4\nalpha = 8\ndensity = 0.05\ntarget_modules = \"all-linear\"\nmodules_to_save = [\"embed_tokens\", \"lm_head\"]\n\
         [data]\ntrain = {:?}\nmax_seq_len = 48\npacking = true\n[objective]\nkind = \"lm\"\n[train]\nsteps = 15\nbatch_size = 4\nlr = 1e-2\nschedule = \"constant\"\nlog_every = 1\nsave_every = 0\n",
        fixture("models/llama").display().to_string(),
        fixture("../../data/pretrain/austen.eval.txt").display().to_string())).unwrap();
    let out = dir.path().join("run");
    let rows = train_ok(&recipe, &out, &[]);
    let losses: Vec<f64> = rows.iter().filter_map(|r| r["loss"].as_f64()).collect();
    assert!(
        losses.last().unwrap() < &(losses[0] - 1.0),
        "loss {} → {}",
        losses[0],
        losses.last().unwrap()
    );
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("final/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["peft_type"], "SLTRAIN");
    assert_eq!(cfg["sparse_density"], 0.05);
    let merged = dir.path().join("merged");
    let o = graft(&[
        "convert",
        fixture("models/llama").to_str().unwrap(),
        merged.to_str().unwrap(),
        "--merge-adapter",
        out.join("final").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let input = dir.path().join("rows.jsonl");
    std::fs::write(
        &input,
        "{\"text\": \"It is a truth universally acknowledged.\"}\n",
    )
    .unwrap();
    let score = |args: &[&str]| -> f64 {
        let o = graft(&[&["score", "--input", input.to_str().unwrap()], args].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str::<serde_json::Value>(stdout(&o).trim()).unwrap()["sum_logprob"]
            .as_f64()
            .unwrap()
    };
    let adapted = score(&[
        "--model",
        fixture("models/llama").to_str().unwrap(),
        "--adapter",
        out.join("final").to_str().unwrap(),
    ]);
    let merged = score(&["--model", merged.to_str().unwrap()]);
    assert!((adapted - merged).abs() < 1e-3, "{adapted} vs {merged}");
}

#[test]
fn mtlora_trains_shared_and_per_task_updates() {
    // MTLoRA over two tasks of a mixture: the shared update and task a's trained; task b (rate 0,
    // never drawn) keeps its zero B; task updates exist only on the task layers' o/MLP projections.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixture("../../data/pretrain/austen.eval.txt")).unwrap();
    let rows = |n: usize, skip: usize| -> String {
        text.split("\n\n")
            .filter(|p| p.len() > 40)
            .skip(skip)
            .take(n)
            .map(|p| {
                serde_json::json!({ "text": p.chars().take(200).collect::<String>() }).to_string()
                    + "\n"
            })
            .collect()
    };
    std::fs::write(dir.path().join("a.jsonl"), rows(8, 0)).unwrap();
    std::fs::write(dir.path().join("b.jsonl"), rows(8, 8)).unwrap();
    let recipe = dir.path().join("mt.toml");
    std::fs::write(&recipe, format!(
        "[model]\npath = {:?}\n[adapter]\nkind = \"mtlora\"\nr = 8\nalpha = 16\ntask_r = 2\ntarget_modules = \"all-linear\"\n\
         [[data.tasks]]\nname = \"a\"\ntrain = {:?}\nrate = 1.0\n[[data.tasks]]\nname = \"b\"\ntrain = {:?}\nrate = 0.0\n\
         [data]\nmax_seq_len = 48\n[objective]\nkind = \"lm\"\n[train]\nsteps = 6\nbatch_size = 4\nlr = 1e-2\nschedule = \"constant\"\nlog_every = 1\nsave_every = 0\n",
        fixture("models/llama").display().to_string(),
        dir.path().join("a.jsonl").display().to_string(),
        dir.path().join("b.jsonl").display().to_string())).unwrap();
    let out = dir.path().join("run");
    train_ok(&recipe, &out, &[]);
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("final/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["peft_type"], "MTLORA");
    assert_eq!(cfg["task_names"], serde_json::json!(["a", "b"]));
    let t = candle_core::safetensors::load(
        out.join("final/adapter_model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let norm = |k: &str| {
        t[k].abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    // the tiny llama has 3 layers: every layer is a task layer (last of each quarter)
    let m = "base_model.model.model.layers.2.mlp.down_proj";
    assert!(
        norm(&format!("{m}.lora_B.weight")) > 0.0,
        "shared update trained"
    );
    assert!(
        norm(&format!("{m}.lora_B.a.weight")) > 0.0,
        "task a trained"
    );
    assert_eq!(
        norm(&format!("{m}.lora_B.b.weight")),
        0.0,
        "task b never drawn"
    );
    assert!(!t.contains_key("base_model.model.model.layers.2.self_attn.q_proj.lora_A.a.weight"));
    // Scoring without a task uses the shared update.
    let input = dir.path().join("rows.jsonl");
    std::fs::write(
        &input,
        "{\"text\": \"It is a truth universally acknowledged.\"}\n",
    )
    .unwrap();
    let o = graft(&[
        "score",
        "--model",
        fixture("models/llama").to_str().unwrap(),
        "--adapter",
        out.join("final").to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn ladder_side_tuning_trains_a_side_network() {
    // LST on the tiny llama (reduction 8: side hidden 4): only the side network, its ladder
    // samplers and gates train — the backbone gets no gradient (none is computed through it) —
    // and the loss falls.
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("lst.toml");
    std::fs::write(&recipe, format!(
        "[model]\npath = {:?}\n[adapter]\nkind = \"lst\"\nreduction = 8\ntarget_modules = \"all-linear\"\n\
         [data]\ntrain = {:?}\nmax_seq_len = 48\npacking = true\n[objective]\nkind = \"lm\"\n[train]\nsteps = 25\nbatch_size = 4\nlr = 1e-2\nschedule = \"constant\"\nlog_every = 1\nsave_every = 0\n",
        fixture("models/llama").display().to_string(),
        fixture("../../data/pretrain/austen.eval.txt").display().to_string())).unwrap();
    let out = dir.path().join("run");
    let rows = train_ok(&recipe, &out, &[]);
    let losses: Vec<f64> = rows.iter().filter_map(|r| r["loss"].as_f64()).collect();
    assert!(
        losses.last().unwrap() < &(losses[0] - 0.3),
        "loss {} → {}",
        losses[0],
        losses.last().unwrap()
    );
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("final/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["peft_type"], "LST");
    assert_eq!(cfg["reduction"], 8);
    let t = candle_core::safetensors::load(
        out.join("final/adapter_model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(
        t.keys()
            .all(|k| k.starts_with("side.") || k.starts_with("lst.")),
        "{:?}",
        t.keys().collect::<Vec<_>>()
    );
    assert_eq!(t["lst.gates"].dims(), [3]);
    assert_eq!(
        t["side.model.layers.0.self_attn.q_proj.weight"].dims(),
        [8, 4]
    );
    // The gates moved from their start (μ = ½).
    let g = t["lst.gates"]
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(g > 0.0);
}

#[test]
fn checkpointing_trains_the_same_run() {
    // train.checkpointing = true recomputes each block in the backward: the same losses, step by
    // step, as without (LoRA with dropout: the recomputation replays the masks).
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("ck.toml");
    std::fs::write(&recipe, format!(
        "[model]\npath = {:?}\n[adapter]\nkind = \"lora\"\nr = 4\nalpha = 8\ndropout = 0.2\ntarget_modules = \"all-linear\"\n\
         [data]\ntrain = {:?}\nmax_seq_len = 48\npacking = true\n[objective]\nkind = \"lm\"\n[train]\nsteps = 5\nbatch_size = 4\nlr = 1e-2\nlog_every = 1\nsave_every = 0\n",
        fixture("models/llama").display().to_string(),
        fixture("../../data/pretrain/austen.eval.txt").display().to_string())).unwrap();
    let losses = |extra: &[&str], name: &str| -> Vec<f64> {
        train_ok(&recipe, &dir.path().join(name), extra)
            .iter()
            .filter_map(|r| r["loss"].as_f64())
            .collect()
    };
    let plain = losses(&[], "plain");
    let ck = losses(&["--set", "train.checkpointing=true"], "ck");
    assert_eq!(plain.len(), ck.len());
    for (a, b) in plain.iter().zip(&ck) {
        assert!((a - b).abs() < 1e-4, "{plain:?} vs {ck:?}");
    }
}
