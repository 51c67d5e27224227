//! `graft train` end to end on the tiny llama fixture: the loss falls on real bundled text, a run
//! killed with SIGKILL resumes to bit-identical weights, bad data and non-finite losses stop cleanly.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use graft_testkit::fixture;

/// JSONL of `{"text"}` rows: paragraphs of the bundled held-out Austen text.
fn austen_rows(dir: &Path, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(fixture("../../data/pretrain/austen.eval.txt")).unwrap();
    let rows: Vec<String> = text
        .split("\n\n")
        .filter(|p| p.len() > 40)
        .take(n)
        .map(|p| serde_json::json!({ "text": p.chars().take(300).collect::<String>() }).to_string())
        .collect();
    let path = dir.join("train.jsonl");
    std::fs::write(&path, rows.join("\n")).unwrap();
    path
}

fn recipe(dir: &Path, train: &Path, extra: &str) -> PathBuf {
    let path = dir.join("recipe.toml");
    let text = format!(
        "[model]\npath = {:?}\n[data]\ntrain = {:?}\nmax_seq_len = 64\npacking = true\n[objective]\nkind = \"lm\"\n\
         [train]\nbatch_size = 4\nlr = 3e-3\nschedule = \"constant\"\nlog_every = 1\nsave_every = 5\nkeep_last = 0\n{extra}",
        fixture("models/llama").display().to_string(),
        train.display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn loss_falls_on_bundled_text_and_outputs_are_complete() {
    let dir = tempfile::tempdir().unwrap();
    let train = austen_rows(dir.path(), 24);
    let r = recipe(dir.path(), &train, "steps = 30\n");
    let out = dir.path().join("run");
    let o = graft(&[
        "train",
        r.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = metrics(&out);
    assert_eq!(rows.len(), 30);
    assert_eq!(rows[0]["step"], 0);
    let (first, last) = (
        rows[0]["loss"].as_f64().unwrap(),
        rows[29]["loss"].as_f64().unwrap(),
    );
    assert!(last < first - 1.0, "loss should fall: {first} → {last}");
    for key in ["lr", "tokens", "grad_norm"] {
        assert!(rows[1].get(key).is_some(), "metrics has {key}");
    }
    for f in [
        "loss.png",
        "manifest.json",
        "final/config.json",
        "final/model.safetensors",
        "final/tokenizer.json",
        "checkpoint-30/optimizer.safetensors",
    ] {
        assert!(out.join(f).exists(), "{f} written");
    }
    // The weights get the mode the umask gives, like the files beside them (safetensors writes
    // through a private 0600 temp file).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |f: &str| std::fs::metadata(out.join(f)).unwrap().permissions().mode() & 0o777;
        for f in [
            "final/model.safetensors",
            "checkpoint-30/optimizer.safetensors",
        ] {
            assert_eq!(mode(f), mode("final/config.json"), "{f}");
        }
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["sha256"].as_str().unwrap().len() == 64)
            .count(),
        manifest["inputs"].as_array().unwrap().len()
    );
    // The result is an HF directory graft (and transformers) can load.
    let input = dir.path().join("score.jsonl");
    std::fs::write(
        &input,
        "{\"text\": \"It was a truth universally acknowledged\"}",
    )
    .unwrap();
    let o = graft(&[
        "score",
        "--model",
        out.join("final").to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn killed_run_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let train = austen_rows(dir.path(), 24);
    // Dropout on, so resume must also reproduce the dropout masks.
    let r = recipe(dir.path(), &train, "steps = 40\n");
    let set = [
        "--set",
        "train.seed=7",
        "--set",
        "model.attention_dropout=0.1",
    ];
    let full = dir.path().join("full");
    let o = graft(
        &[
            &[
                "train",
                r.to_str().unwrap(),
                "--output",
                full.to_str().unwrap(),
            ][..],
            &set[..],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));

    let killed = dir.path().join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_graft"))
        .args(
            [
                &[
                    "train",
                    r.to_str().unwrap(),
                    "--output",
                    killed.to_str().unwrap(),
                ][..],
                &set[..],
            ]
            .concat(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // SIGKILL once a mid-run checkpoint exists (no chance to clean up).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !killed.join("checkpoint-10").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !killed.join("final").exists(),
        "the run was killed before it finished"
    );

    let o = graft(
        &[
            &[
                "train",
                r.to_str().unwrap(),
                "--output",
                killed.to_str().unwrap(),
                "--resume",
            ][..],
            &set[..],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let a = std::fs::read(full.join("final/model.safetensors")).unwrap();
    let b = std::fs::read(killed.join("final/model.safetensors")).unwrap();
    assert!(a == b, "resumed weights differ from the uninterrupted run");
    // The metrics of the resumed run continue the killed one without duplicate steps.
    let steps: Vec<u64> = metrics(&killed)
        .iter()
        .filter(|r| r.get("loss").is_some())
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (0..40).collect::<Vec<_>>());
}

#[test]
fn a_sigkill_while_a_checkpoint_is_written_resumes_from_a_verified_one() {
    let dir = tempfile::tempdir().unwrap();
    let train = austen_rows(dir.path(), 24);
    let r = recipe(dir.path(), &train, "steps = 15\n");
    let run = |out: &Path, extra: &[&str], kill_at: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_graft"));
        cmd.args([
            "train",
            r.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        cmd.args(extra);
        if let Some(step) = kill_at {
            cmd.env("GRAFT_TEST_KILL_IN_CHECKPOINT", step);
        }
        cmd.output().unwrap()
    };
    let full = dir.path().join("full");
    assert!(run(&full, &[], None).status.success());
    // Killed with checkpoint-10's weights on disk but the checkpoint not committed.
    let killed = dir.path().join("killed");
    let o = run(&killed, &[], Some("10"));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&o.status),
        Some(9)
    );
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    };
    let before = names(&killed);
    assert!(
        before.iter().any(|n| n.starts_with(".checkpoint-10.tmp-")),
        "{before:?}"
    );
    assert!(!before.contains(&"checkpoint-10".to_string()), "{before:?}");
    let o = run(&killed, &["--resume"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("half-written"), "{}", stderr(&o));
    let after = names(&killed);
    assert!(!after.iter().any(|n| n.contains(".tmp-")), "{after:?}");
    let a = std::fs::read(full.join("final/model.safetensors")).unwrap();
    let b = std::fs::read(killed.join("final/model.safetensors")).unwrap();
    assert!(
        a == b,
        "resumed from checkpoint-5: the weights equal the uninterrupted run's"
    );
    let losses = |d: &Path| -> Vec<(u64, f64)> {
        metrics(d)
            .iter()
            .filter(|m| m.get("loss").is_some())
            .map(|m| (m["step"].as_u64().unwrap(), m["loss"].as_f64().unwrap()))
            .collect()
    };
    assert_eq!(losses(&full), losses(&killed));
}

#[test]
fn a_checkpoint_that_does_not_verify_is_skipped_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let train = austen_rows(dir.path(), 24);
    let r = recipe(dir.path(), &train, "steps = 15\n");
    let run = |out: &Path, extra: &[&str]| {
        let o = graft(
            &[
                &[
                    "train",
                    r.to_str().unwrap(),
                    "--output",
                    out.to_str().unwrap(),
                ][..],
                extra,
            ]
            .concat(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let full = dir.path().join("full");
    run(&full, &[]);
    // A run stopped after 10 steps whose newest checkpoint then rots on disk.
    let cut = dir.path().join("cut");
    run(&cut, &["--set", "train.steps=10"]);
    let weights = cut.join("checkpoint-10/model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&weights, bytes).unwrap();
    let err = run(&cut, &["--set", "train.steps=15", "--resume"]);
    assert!(
        err.contains("checkpoint-10/model.safetensors") && err.contains("checkpoint-5"),
        "{err}"
    );
    let a = std::fs::read(full.join("final/model.safetensors")).unwrap();
    let b = std::fs::read(cut.join("final/model.safetensors")).unwrap();
    assert!(
        a == b,
        "resumed from checkpoint-5, the weights equal the uninterrupted run's"
    );
}

#[test]
fn bad_training_data_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "{\"text\": \"fine\"}\n{\"text\": \"broken\"\n",
            vec!["train.jsonl:2", "invalid JSON"],
        ),
        (
            "{\"messages\": [{\"content\": \"hi\"}]}\n",
            vec!["train.jsonl:1", "messages[0].role"],
        ),
        ("{\"prompt\": \"a\"}\n", vec!["train.jsonl:1", "no `text`"]),
        ("\n\n", vec!["train.jsonl", "no rows"]),
    ];
    for (data, needles) in cases {
        let train = dir.path().join("train.jsonl");
        std::fs::write(&train, data).unwrap();
        let r = recipe(dir.path(), &train, "steps = 2\n");
        let o = graft(&[
            "train",
            r.to_str().unwrap(),
            "--output",
            dir.path().join("out").to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        for n in needles {
            assert!(stderr(&o).contains(n), "`{n}` not in {}", stderr(&o));
        }
    }
    // A chat template that fails to render names the row.
    let model = dir.path().join("model");
    copy_dir(&fixture("models/llama"), &model);
    let cfg_path = model.join("tokenizer_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["chat_template"] = "{{ raise_exception('only two turns, please') }}".into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let train = dir.path().join("train.jsonl");
    std::fs::write(&train, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}\n").unwrap();
    let r = recipe(dir.path(), &train, "steps = 2\n");
    let o = graft(&[
        "train",
        r.to_str().unwrap(),
        "--output",
        dir.path().join("t").to_str().unwrap(),
        "--set",
        &format!("model.path={:?}", model.display().to_string()),
        "--set",
        "objective.kind=\"sft\"",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("train.jsonl:1") && stderr(&o).contains("only two turns"),
        "{}",
        stderr(&o)
    );

    // A misspelt recipe key is an error, not a silent default.
    let train = austen_rows(dir.path(), 4);
    let r = recipe(dir.path(), &train, "steps = 2\nlearning_rate = 1.0\n");
    let o = graft(&["train", r.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("learning_rate"), "{}", stderr(&o));
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let train = austen_rows(dir.path(), 8);
    // An absurd learning rate: the first update sends the weights to ±1e30 and the next loss is not finite.
    let r = recipe(dir.path(), &train, "steps = 10\n");
    let out = dir.path().join("run");
    let o = graft(&[
        "train",
        r.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--set",
        "train.lr=1e30",
        "--set",
        "train.save_every=1",
        "--set",
        "train.max_grad_norm=1e9",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("not finite") && err.contains("checkpoint-"),
        "{err}"
    );
    assert!(!out.join("final").exists());
}

#[test]
fn every_objective_trains_on_its_row_shape() {
    let dir = tempfile::tempdir().unwrap();
    let chat: Vec<String> = (0..6)
        .map(|i| {
            serde_json::json!({"messages": [
            {"role": "user", "content": format!("what is {i} and one?")},
            {"role": "assistant", "content": format!("it is {}.", i + 1)}]})
            .to_string()
        })
        .collect();
    let chat_path = dir.path().join("chat.jsonl");
    std::fs::write(&chat_path, chat.join("\n")).unwrap();
    let text_path = austen_rows(dir.path(), 6);
    for (objective, data, metric) in [
        ("{ kind = \"lm\", z_loss = 1e-4 }", &text_path, "z_loss"),
        ("{ kind = \"sft\" }", &chat_path, "ce"),
        (
            "{ kind = \"minor_sft\", beta = 0.1 }",
            &chat_path,
            "deviation",
        ),
    ] {
        let r = recipe(dir.path(), data, "steps = 3\n");
        let out = dir.path().join(format!("run-{metric}"));
        let o = graft(&[
            "train",
            r.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--set",
            &format!("objective={objective}"),
        ]);
        assert!(o.status.success(), "{objective}: {}", stderr(&o));
        let rows = metrics(&out);
        assert!(
            rows[0]
                .get(metric)
                .is_some_and(|v| v.as_f64().unwrap().is_finite()),
            "{objective}: {:?}",
            rows[0]
        );
    }
}

#[test]
fn parquet_training_data_trains_like_its_jsonl() {
    // tools/fixtures/make_parquet_fixtures.py: the same chat rows as Parquet (pyarrow, snappy) and JSONL.
    let dir = tempfile::tempdir().unwrap();
    let mut finals = Vec::new();
    for file in ["chat.parquet", "chat.jsonl"] {
        let r = recipe(dir.path(), &fixture(&format!("data/{file}")), "steps = 3\n");
        let out = dir.path().join(file);
        let o = graft(&[
            "train",
            r.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--set",
            "objective.kind=\"sft\"",
        ]);
        assert!(o.status.success(), "{file}: {}", stderr(&o));
        finals.push(std::fs::read(out.join("final/model.safetensors")).unwrap());
    }
    assert!(
        finals[0] == finals[1],
        "Parquet and JSONL rows train identically"
    );
}

#[test]
fn bf16_training_keeps_f32_masters_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let train = austen_rows(dir.path(), 12);
    let r = recipe(dir.path(), &train, "steps = 6\n");
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec![
            "train",
            r.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--set",
            "model.dtype=\"bf16\"",
            "--set",
            "train.save_every=3",
        ];
        args.extend_from_slice(extra);
        let o = graft(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        out
    };
    let bf16 = run("bf16", &[]);
    let f32_out = dir.path().join("f32");
    assert!(graft(&[
        "train",
        r.to_str().unwrap(),
        "--output",
        f32_out.to_str().unwrap()
    ])
    .status
    .success());
    let (a, b) = (metrics(&bf16), metrics(&f32_out));
    let (l16, l32) = (
        a[0]["loss"].as_f64().unwrap(),
        b[0]["loss"].as_f64().unwrap(),
    );
    assert!(
        (l16 - l32).abs() < 0.05,
        "step-0 loss bf16 {l16} vs f32 {l32}"
    );
    assert!(
        a[5]["loss"].as_f64().unwrap() < l16,
        "bf16 training lowers the loss"
    );
    let weights = candle_core::safetensors::load(
        bf16.join("final/model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(
        weights
            .values()
            .all(|t| t.dtype() == candle_core::DType::BF16),
        "final/ is bf16"
    );
    let masters = candle_core::safetensors::load(
        bf16.join("checkpoint-3/model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(
        masters
            .values()
            .all(|t| t.dtype() == candle_core::DType::F32),
        "checkpoints keep the f32 masters"
    );
    // Resume from checkpoint-3 after removing the later results: the same final weights.
    let resumed = dir.path().join("resumed");
    std::fs::create_dir_all(&resumed).unwrap();
    copy_dir(&bf16.join("checkpoint-3"), &resumed.join("checkpoint-3"));
    std::fs::copy(bf16.join("metrics.jsonl"), resumed.join("metrics.jsonl")).unwrap();
    let resumed = run("resumed", &["--resume"]);
    assert!(
        std::fs::read(bf16.join("final/model.safetensors")).unwrap()
            == std::fs::read(resumed.join("final/model.safetensors")).unwrap()
    );
}

#[test]
fn task_mixture_trains_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let austen = austen_rows(dir.path(), 24);
    let other = dir.path().join("other.jsonl");
    let rows: Vec<String> = (0..12)
        .map(|i| serde_json::json!({"text": format!("Row {i}: the quick brown fox jumps over the lazy dog {i} times.")}).to_string())
        .collect();
    std::fs::write(&other, rows.join("\n")).unwrap();
    let recipe_text = |steps: usize| {
        format!(
            "[model]\npath = {:?}\n[data]\nmax_seq_len = 64\n\
             [[data.tasks]]\nname = \"austen\"\ntrain = {:?}\n[[data.tasks]]\nname = \"fox\"\ntrain = {:?}\n\
             [data.mixture]\ntemperature = 0.3\n[[data.mixture.switch]]\nstep = 4\nrates = {{ fox = 1.0 }}\n\
             [objective]\nkind = \"lm\"\n[train]\nbatch_size = 2\ngrad_accum = 2\nlr = 3e-3\nschedule = \"constant\"\n\
             log_every = 1\nsave_every = 3\nkeep_last = 0\nsteps = {steps}\n",
            fixture("models/llama").display().to_string(),
            austen.display().to_string(),
            other.display().to_string()
        )
    };
    let r = dir.path().join("mix.toml");
    std::fs::write(&r, recipe_text(6)).unwrap();
    let straight = train_ok(&r, &dir.path().join("a"), &[]);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("a/manifest.json")).unwrap())
            .unwrap();
    assert!(manifest.to_string().contains("fox"), "{manifest}");
    // Three steps, then --resume to six: the same losses and the same final weights.
    std::fs::write(&r, recipe_text(3)).unwrap();
    train_ok(&r, &dir.path().join("b"), &[]);
    std::fs::write(&r, recipe_text(6)).unwrap();
    let resumed = train_ok(&r, &dir.path().join("b"), &["--resume"]);
    let losses = |m: &[serde_json::Value]| m.iter().map(|r| r["loss"].as_f64()).collect::<Vec<_>>();
    assert_eq!(losses(&straight), losses(&resumed));
    let a = std::fs::read(dir.path().join("a/final/model.safetensors")).unwrap();
    let b = std::fs::read(dir.path().join("b/final/model.safetensors")).unwrap();
    assert!(a == b, "resumed weights differ");

    // Bad mixtures are named.
    std::fs::write(&r, recipe_text(6).replace("fox = 1.0", "nope = 1.0")).unwrap();
    let o = graft(&[
        "train",
        r.to_str().unwrap(),
        "--output",
        dir.path().join("c").to_str().unwrap(),
    ]);
    assert_user_error(&o, &["nope"]);
}

#[test]
fn skip_bad_rows_counts_and_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let train = austen_rows(dir.path(), 8);
    let mut text = std::fs::read_to_string(&train).unwrap();
    text.push_str("\n{not json\n{\"txt\": \"a misspelt field\"}\n");
    std::fs::write(&train, text).unwrap();
    let r = recipe(dir.path(), &train, "steps = 2\n");
    let o = graft(&[
        "train",
        r.to_str().unwrap(),
        "--output",
        dir.path().join("a").to_str().unwrap(),
    ]);
    assert_user_error(&o, &["train.jsonl:9", "invalid JSON"]);
    let out = dir.path().join("b");
    let o = graft(&[
        "train",
        r.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--skip-bad-rows",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("skipped 2 bad rows"), "{}", stderr(&o));
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(
        manifest.contains("train.jsonl:9") && manifest.contains("train.jsonl:10"),
        "{manifest}"
    );
}
