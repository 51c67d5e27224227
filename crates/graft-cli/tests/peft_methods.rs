//! The PEFT methods beyond LoRA/DoRA end to end on tiny llamas, and activation checkpointing:
//! QLoRA on an NF4 base, SLTrain, MTLoRA, Ladder Side-Tuning.

mod common;
use common::*;

use std::path::{Path, PathBuf};

use graft_testkit::fixture;

/// A recipe training `model` on the bundled held-out Austen text (lm, packed 48-token rows,
/// batch 4), with `model_extra` lines under [model], the [adapter] lines, and [train] lines.
fn text_recipe(path: &Path, model: &Path, model_extra: &str, adapter: &str, train: &str) {
    std::fs::write(
        path,
        format!(
            "[model]\npath = {:?}\n{model_extra}[adapter]\n{adapter}\n[data]\ntrain = {:?}\nmax_seq_len = 48\npacking = true\n\
             [objective]\nkind = \"lm\"\n[train]\n{train}\nbatch_size = 4\nlog_every = 1\nsave_every = 0\n",
            model.display().to_string(),
            fixture("../../data/pretrain/austen.eval.txt").display().to_string()
        ),
    )
    .unwrap();
}

fn losses(rows: &[serde_json::Value]) -> Vec<f64> {
    rows.iter().filter_map(|r| r["loss"].as_f64()).collect()
}

fn assert_falls(rows: &[serde_json::Value], by: f64) {
    let l = losses(rows);
    assert!(
        l.last().unwrap() < &(l[0] - by),
        "loss {} → {}",
        l[0],
        l.last().unwrap()
    );
}

/// One `{"text"}` row to score.
fn score_input(dir: &Path) -> PathBuf {
    let input = dir.join("rows.jsonl");
    std::fs::write(
        &input,
        "{\"text\": \"It is a truth universally acknowledged.\"}\n",
    )
    .unwrap();
    input
}

fn adapter_config(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("final/adapter_config.json")).unwrap())
        .unwrap()
}

fn adapter_tensors(out: &Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(
        out.join("final/adapter_model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap()
}

fn abs_sum(t: &candle_core::Tensor) -> f32 {
    t.abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn qlora_on_an_nf4_base_trains_and_scores() {
    // An HF model quantized to NF4 (+ double quantization) at load, LoRA on every linear: the loss
    // falls; the adapter scores on the same NF4 base (`--nf4`); bad settings are named.
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("qlora.toml");
    let write = |quantized: &str, model: &Path| {
        text_recipe(
            &recipe,
            model,
            &format!("quantized = {quantized}\n"),
            "kind = \"lora\"\nr = 8\nalpha = 16\ntarget_modules = \"all-linear\"",
            "steps = 12\nlr = 1e-2\nschedule = \"constant\"",
        )
    };
    write("\"nf4\"", &fixture("models/llama_h64"));
    let out = dir.path().join("run");
    assert_falls(&train_ok(&recipe, &out, &[]), 0.5);
    let input = score_input(dir.path());
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

    for (quantized, model, out, needles) in [
        (
            "\"nf3\"",
            "models/llama_h64",
            "b",
            ["model.quantized", "nf3"],
        ),
        (
            "\"nf4\"",
            "models/llama-q8_0.gguf",
            "c",
            ["llama-q8_0.gguf", "NF4"],
        ),
    ] {
        write(quantized, &fixture(model));
        let out = dir.path().join(out);
        let o = graft(&[
            "train",
            recipe.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        assert_user_error(&o, &needles);
    }
}

#[test]
fn sltrain_pretrains_and_merges() {
    // SLTrain on the tiny llama: every linear layer becomes low-rank + fixed-support sparse (the
    // base weight unused), embeddings and head trained in full; the loss falls, and the merged HF
    // model scores exactly as the adapter on its base.
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("sltrain.toml");
    text_recipe(
        &recipe,
        &fixture("models/llama"),
        "",
        "kind = \"sltrain\"\nr = 4\nalpha = 8\ndensity = 0.05\ntarget_modules = \"all-linear\"\nmodules_to_save = [\"embed_tokens\", \"lm_head\"]",
        "steps = 15\nlr = 1e-2\nschedule = \"constant\"",
    );
    let out = dir.path().join("run");
    assert_falls(&train_ok(&recipe, &out, &[]), 1.0);
    let cfg = adapter_config(&out);
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
    let input = score_input(dir.path());
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
    let cfg = adapter_config(&out);
    assert_eq!(cfg["peft_type"], "MTLORA");
    assert_eq!(cfg["task_names"], serde_json::json!(["a", "b"]));
    let t = adapter_tensors(&out);
    // the tiny llama has 3 layers: every layer is a task layer (last of each quarter)
    let m = "base_model.model.model.layers.2.mlp.down_proj";
    assert!(
        abs_sum(&t[&format!("{m}.lora_B.weight")]) > 0.0,
        "shared update trained"
    );
    assert!(
        abs_sum(&t[&format!("{m}.lora_B.a.weight")]) > 0.0,
        "task a trained"
    );
    assert_eq!(
        abs_sum(&t[&format!("{m}.lora_B.b.weight")]),
        0.0,
        "task b never drawn"
    );
    assert!(!t.contains_key("base_model.model.model.layers.2.self_attn.q_proj.lora_A.a.weight"));
    // Scoring without a task uses the shared update.
    let input = score_input(dir.path());
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
    // LST on the tiny llama (reduction 8: side hidden 4), side blocks pruned from the backbone by
    // the Fisher importance (the default): only the side network, its ladder samplers and gates
    // train — the backbone gets no gradient (none is computed through it) — the loss falls, and
    // `graft score --adapter` runs the saved side network.
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("lst.toml");
    text_recipe(
        &recipe,
        &fixture("models/llama"),
        "",
        "kind = \"lst\"\nreduction = 8\ntarget_modules = \"all-linear\"\nfisher_samples = 8",
        "steps = 25\nlr = 1e-2\nschedule = \"constant\"",
    );
    let out = dir.path().join("run");
    assert_falls(&train_ok(&recipe, &out, &[]), 0.3);
    let cfg = adapter_config(&out);
    assert_eq!(cfg["peft_type"], "LST");
    assert_eq!(cfg["reduction"], 8);
    assert_eq!(cfg["side_init"], "fisher");
    assert_eq!(cfg["rope_pairs"].as_array().unwrap().len(), 3);
    let t = adapter_tensors(&out);
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
    assert!(abs_sum(&t["lst.gates"]) > 0.0);
    let input = score_input(dir.path());
    let score = |adapter: Option<&Path>| {
        let mut args = vec![
            "score".to_string(),
            "--model".into(),
            fixture("models/llama").display().to_string(),
            "--input".into(),
            input.display().to_string(),
        ];
        if let Some(a) = adapter {
            args.extend(["--adapter".to_string(), a.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = graft(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    assert_ne!(score(Some(&out.join("final"))), score(None));

    // Layer dropping and the other starts: two side layers tapping backbone layers 1 and 2.
    for init in ["magnitude", "random"] {
        let out = dir.path().join(init);
        let set = format!("adapter.side_init=\"{init}\"");
        train_ok(
            &recipe,
            &out,
            &["--set", &set, "--set", "adapter.side_layers=[1, 2]"],
        );
        let cfg = adapter_config(&out);
        assert_eq!(cfg["side_layers"], serde_json::json!([1, 2]));
        assert_eq!(adapter_tensors(&out)["lst.gates"].dims(), [2]);
        score(Some(&out.join("final")));
    }
}

#[test]
fn checkpointing_trains_the_same_run() {
    // train.checkpointing = true recomputes each block in the backward: the same losses, step by
    // step, as without (LoRA with dropout: the recomputation replays the masks).
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("ck.toml");
    text_recipe(
        &recipe,
        &fixture("models/llama"),
        "",
        "kind = \"lora\"\nr = 4\nalpha = 8\ndropout = 0.2\ntarget_modules = \"all-linear\"",
        "steps = 5\nlr = 1e-2",
    );
    let run =
        |extra: &[&str], name: &str| losses(&train_ok(&recipe, &dir.path().join(name), extra));
    let plain = run(&[], "plain");
    let ck = run(&["--set", "train.checkpointing=true"], "ck");
    assert_eq!(plain.len(), ck.len());
    for (a, b) in plain.iter().zip(&ck) {
        assert!((a - b).abs() < 1e-4, "{plain:?} vs {ck:?}");
    }
}
