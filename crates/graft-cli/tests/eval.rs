//! `graft eval` end to end on the tiny llama: lm-eval's task files and numbers
//! (tests/fixtures/eval, lm_eval 0.4.13), its output layout, built-in tasks, and bad input.

mod common;
use common::*;

use graft_testkit::{fixture, read_json};

fn model() -> String {
    fixture("models/llama").display().to_string()
}

#[test]
fn writes_lm_eval_results_with_lm_eval_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("eval");
    let tasks = format!("{},austen_bpb", fixture("eval/tiny_mc.yaml").display());
    let o = graft(&[
        "eval",
        "--model",
        &model(),
        "--tasks",
        &tasks,
        "--num-fewshot",
        "2",
        "--limit",
        "3",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    for key in [
        "results",
        "configs",
        "versions",
        "n-shot",
        "n-samples",
        "higher_is_better",
        "config",
        "date",
    ] {
        assert!(r.get(key).is_some(), "results.json lacks {key}");
    }
    assert_eq!(r["n-shot"]["tiny_mc"], 2);
    assert_eq!(r["n-samples"]["tiny_mc"]["effective"], 3);
    // The first 3 documents of lm-eval's 2-shot run: acc is the mean of its per-document values.
    let want: Vec<f64> =
        std::fs::read_to_string(fixture("eval/lm_eval_out/tiny_mc_2shot_samples.jsonl"))
            .unwrap()
            .lines()
            .take(3)
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["acc"]
                    .as_f64()
                    .unwrap()
            })
            .collect();
    let acc = r["results"]["tiny_mc"]["acc,none"].as_f64().unwrap();
    assert!((acc - want.iter().sum::<f64>() / 3.0).abs() < 1e-12);
    let bpb = r["results"]["austen_bpb"]["bits_per_byte,none"]
        .as_f64()
        .unwrap();
    assert!(bpb > 0.0 && bpb.is_finite());
    assert_eq!(
        r["results"]["austen_bpb"]["bits_per_byte_stderr,none"],
        "N/A"
    );
    let samples = std::fs::read_to_string(out.join("samples_tiny_mc.jsonl")).unwrap();
    assert_eq!(samples.lines().count(), 3);
    assert!(stdout(&o).contains("| tiny_mc | 2 | acc | none |"));
    let full = read_json("eval/lm_eval_out/tiny_mc_2shot_results.json");
    assert_eq!(full["versions"]["tiny_mc"], r["versions"]["tiny_mc"]);
}

#[test]
fn bad_task_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(fixture("eval/tiny_mc.yaml")).unwrap();
    let data = fixture("eval/data").display().to_string();
    let base = base.replace("data/", &format!("{data}/"));
    let cases = [
        (
            format!("{base}process_docs: 1\n"),
            vec!["process_docs", "not supported"],
        ),
        (
            base.replace(
                "doc_to_text: \"{{question}}\\nanswer\"",
                "doc_to_text: !function utils.text",
            ),
            vec!["doc_to_text", "!function"],
        ),
        (
            base.replace("{{question}}", "{{missing_field}}"),
            vec!["document 0", "missing_field"],
        ),
        (
            base.replace("output_type: multiple_choice", "output_type: ranking"),
            vec!["output_type", "ranking"],
        ),
        (
            base.replace("- metric: acc_norm", "- metric: bleurt"),
            vec!["bleurt"],
        ),
    ];
    for (i, (yaml, needles)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("task{i}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        let o = graft(&[
            "eval",
            "--model",
            &model(),
            "--tasks",
            path.to_str().unwrap(),
            "--output",
            dir.path().join(format!("out{i}")).to_str().unwrap(),
        ]);
        let mut needles = needles.clone();
        let shown = path.display().to_string();
        needles.push(&shown);
        assert_user_error(&o, &needles);
        assert!(!dir
            .path()
            .join(format!("out{i}"))
            .join("results.json")
            .exists());
    }
    let o = graft(&[
        "eval",
        "--model",
        &model(),
        "--tasks",
        "no_such_task",
        "--output",
        "x",
    ]);
    assert_user_error(&o, &["no_such_task", "austen_bpb"]);
}

#[test]
fn training_runs_evaluation_tasks() {
    // [train] eval_tasks: the tasks run at eval_every steps and at the end, logged as
    // <task>/<metric>,<filter>; a LoRA run on the tiny llama with the bundled Austen text.
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("r.toml");
    std::fs::write(
        &recipe,
        format!(
            "[model]\npath = {:?}\n[adapter]\nkind = \"lora\"\nr = 4\nalpha = 8\ntarget_modules = \"all-linear\"\n\
             [data]\ntrain = {:?}\nmax_seq_len = 48\npacking = true\n[objective]\nkind = \"lm\"\n\
             [train]\nsteps = 4\nlr = 1e-2\nbatch_size = 4\nlog_every = 1\nsave_every = 0\neval_every = 2\n\
             eval_tasks = [{:?}, \"austen_bpb\"]\neval_tasks_limit = 4\n",
            model(),
            fixture("../../data/pretrain/austen.eval.txt").display().to_string(),
            fixture("eval/tiny_mc.yaml").display().to_string(),
        ),
    )
    .unwrap();
    let rows = train_ok(&recipe, &dir.path().join("run"), &[]);
    let evals: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r.get("tiny_mc/acc,none").is_some())
        .collect();
    // Steps 0 and 2, and the final evaluation.
    assert_eq!(evals.len(), 3, "{rows:?}");
    for r in &evals {
        let acc = r["tiny_mc/acc,none"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        assert!(r["austen_bpb/bits_per_byte,none"].as_f64().unwrap() > 0.0);
        assert!(r.get("eval_loss").is_none());
    }
    // Training moves the model: the bits per byte change.
    let bpb = |r: &serde_json::Value| r["austen_bpb/bits_per_byte,none"].as_f64().unwrap();
    assert_ne!(bpb(evals[0]), bpb(evals[2]));
    // A bad task stops the run before training.
    let o = graft(&[
        "train",
        recipe.to_str().unwrap(),
        "--output",
        dir.path().join("bad").to_str().unwrap(),
        "--set",
        "train.eval_tasks=[\"nope.yaml\"]",
    ]);
    assert_user_error(&o, &["eval_tasks", "nope.yaml"]);
}

#[test]
fn humaneval_runs_generated_code_and_reports_each_outcome() {
    if !graft_eval::code_exec::python_available() {
        eprintln!("skipped: no python3 here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("he");
    // HumanEval asks for up to 1024 new tokens, more than the tiny llama's 64 positions (which
    // lm-eval and graft refuse): the same weights with a longer window (RoPE has no learned
    // positions).
    let long = dir.path().join("llama-long");
    copy_dir(&fixture("models/llama"), &long);
    let cfg_path = long.join("config.json");
    let mut cfg = read_json_path(&cfg_path);
    cfg["max_position_embeddings"] = 2048.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let m = long.display().to_string();
    let args = [
        "eval",
        "--model",
        &m,
        "--tasks",
        "humaneval",
        "--limit",
        "2",
        "--output",
        out.to_str().unwrap(),
    ];
    // Generated code runs only on explicit opt-in; without it, nothing runs or is written.
    let o = graft(&args);
    assert_user_error(&o, &["humaneval", "--allow-code-execution"]);
    assert!(!out.join("results.json").exists());
    let o = graft(&[&args[..], &["--allow-code-execution"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    // A random tiny model solves nothing; every sample says why.
    assert_eq!(r["results"]["humaneval"]["pass@1,none"], 0.0);
    let samples = std::fs::read_to_string(out.join("samples_humaneval.jsonl")).unwrap();
    for line in samples.lines() {
        let s: serde_json::Value = serde_json::from_str(line).unwrap();
        let e = s["execution"].as_str().unwrap();
        assert!(e.starts_with("failed") || e == "timed out", "{e}");
    }
}

#[test]
fn compares_runs_side_by_side() {
    // Base model, then the same with a PEFT LoRA adapter, compared: comparison.md has both
    // columns with each run's own numbers; comparison.png is written.
    let dir = tempfile::tempdir().unwrap();
    let task = fixture("eval/tiny_mc.yaml").display().to_string();
    let (a, b) = (dir.path().join("base"), dir.path().join("lora"));
    let o = graft(&[
        "eval",
        "--model",
        &model(),
        "--tasks",
        &task,
        "--output",
        a.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let adapter = fixture("adapters/lora_qv").display().to_string();
    let o = graft(&[
        "eval",
        "--model",
        &model(),
        "--adapter",
        &adapter,
        "--tasks",
        &task,
        "--output",
        b.to_str().unwrap(),
        "--compare",
        a.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_to_string(b.join("comparison.md")).unwrap();
    assert!(md.starts_with("| task / metric | base | lora |"), "{md}");
    let read = |d: &std::path::Path| -> f64 {
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("results.json")).unwrap())
                .unwrap();
        r["results"]["tiny_mc"]["acc,none"].as_f64().unwrap()
    };
    assert!(
        md.contains(&format!(
            "| tiny_mc acc,none | {:.4} | {:.4} |",
            read(&a),
            read(&b)
        )),
        "{md}"
    );
    assert!(std::fs::metadata(b.join("comparison.png")).unwrap().len() > 1000);
    assert!(stdout(&o).contains("| tiny_mc acc,none |"));
}

#[test]
fn lm_evals_own_task_names_run_from_a_dataset_mirror() {
    // `--tasks ai2_arc` (a tag of lm-eval's arc files) with --include-path and --datasets-dir:
    // lm-eval's own YAMLs, unchanged, read the mirror's Parquet files; the numbers are
    // lm-eval's (tests/fixtures/eval/lm_eval_out/arc_*).
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("eval");
    let tasks_dir = fixture("eval/lm_eval_tasks");
    let mirror = fixture("eval/mirror");
    let o = graft(&[
        "eval",
        "--model",
        &model(),
        "--include-path",
        tasks_dir.to_str().unwrap(),
        "--datasets-dir",
        mirror.to_str().unwrap(),
        "--tasks",
        "ai2_arc",
        "--num-fewshot",
        "0",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(out.join("results.json")).unwrap(),
    )
    .unwrap();
    let want = read_json("eval/lm_eval_out/arc_easy_0shot_results.json");
    for key in ["acc,none", "acc_norm,none"] {
        let (g, w) = (
            &r["results"]["arc_easy"][key],
            &want["results"]["arc_easy"][key],
        );
        assert!(
            (g.as_f64().unwrap() - w.as_f64().unwrap()).abs() < 1e-9,
            "{key}: {g} vs {w}"
        );
    }
    assert!(r["results"]["arc_challenge"]["acc,none"].is_f64());

    // Without the mirror: one line that says where the data was looked for.
    let o = graft(&[
        "eval",
        "--model",
        &model(),
        "--include-path",
        tasks_dir.to_str().unwrap(),
        "--datasets-dir",
        dir.path().to_str().unwrap(),
        "--tasks",
        "arc_easy",
        "--output",
        dir.path().join("e2").to_str().unwrap(),
    ]);
    assert_user_error(
        &o,
        &["arc_easy.yaml", "allenai/ai2_arc", "ARC-Easy", "looked for"],
    );
    let o = graft(&[
        "eval",
        "--model",
        &model(),
        "--include-path",
        tasks_dir.to_str().unwrap(),
        "--tasks",
        "arc_hard",
        "--output",
        dir.path().join("e3").to_str().unwrap(),
    ]);
    assert_user_error(&o, &["arc_hard", "--include-path"]);
}

#[test]
fn eval_check_sorts_task_files_into_ok_python_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tasks");
    std::fs::create_dir_all(&tree).unwrap();
    let w = |name: &str, text: &str| std::fs::write(tree.join(name), text).unwrap();
    w(
        "good.yaml",
        "task: good\ndataset_path: allenai/ai2_arc\noutput_type: multiple_choice\ntest_split: test\n\
         doc_to_text: \"{{question.strip()}}\"\ndoc_to_target: 0\ndoc_to_choice: [\"a\", \"b\"]\n",
    );
    w(
        "hook.yaml",
        "task: hook\ndataset_path: x/y\ntest_split: test\nprocess_docs: !function utils.process\n\
         doc_to_text: q\ndoc_to_target: a\n",
    );
    w(
        "sampled.yaml",
        "task: sampled\ndataset_path: x/y\ntest_split: test\ndoc_to_text: q\ndoc_to_target: a\n\
         generation_kwargs:\n  do_sample: true\n",
    );
    w("broken.yaml", "task: broken\ndataset_path: x/y\ntest_split: test\ndoc_to_text: \"{{ q \"\ndoc_to_target: a\n");
    w("_group.yaml", "group: all\ntask:\n  - good\n  - hook\n");
    let table = dir.path().join("t.tsv");
    let o = graft(&[
        "eval-check",
        "--include-path",
        tree.to_str().unwrap(),
        "--output",
        table.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&table).unwrap();
    let status = |task: &str| -> (String, String) {
        let row = text
            .lines()
            .find(|l| l.split('\t').nth(1) == Some(task))
            .unwrap_or_else(|| panic!("{task} missing: {text}"));
        let f: Vec<&str> = row.split('\t').collect();
        (f[2].to_string(), f[3].to_string())
    };
    assert_eq!(status("good").0, "ok");
    assert_eq!(status("hook").0, "python");
    let (s, why) = status("sampled");
    assert!(s == "refused" && why.contains("do_sample"), "{why}");
    let (s, why) = status("broken");
    assert!(s == "refused" && why.contains("doc_to_text"), "{why}");
    assert_eq!(status("all").0, "group");
    assert!(stderr(&o).contains("ok: 1"), "{}", stderr(&o));
    // A task named on the command line that cannot run: exit 2.
    let o = graft(&[
        "eval-check",
        "--include-path",
        tree.to_str().unwrap(),
        "--tasks",
        "hook",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn a_group_reports_lm_evals_size_weighted_rows() {
    // mini_mmlu (tests/fixtures/eval/lm_eval_groups, lm-eval's group schema) nests a group and
    // holds lm-eval's own mmlu_anatomy / mmlu_astronomy: results, groups, group_subtasks,
    // n-shot, versions and higher_is_better equal lm-eval 0.4.13's results.json.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("eval");
    let o = graft(&[
        "eval",
        "--model",
        &model(),
        "--include-path",
        fixture("eval/lm_eval_tasks").to_str().unwrap(),
        "--include-path",
        fixture("eval/lm_eval_groups").to_str().unwrap(),
        "--datasets-dir",
        fixture("eval/mirror").to_str().unwrap(),
        "--tasks",
        "mini_mmlu",
        "--num-fewshot",
        "1",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = read_json_path(&out.join("results.json"));
    let want = read_json("eval/lm_eval_out/mini_mmlu_1shot_results.json");
    for key in [
        "groups",
        "group_subtasks",
        "n-shot",
        "versions",
        "higher_is_better",
    ] {
        assert_eq!(got[key], want[key], "{key}");
    }
    for (task, row) in want["results"].as_object().unwrap() {
        for (k, w) in row.as_object().unwrap() {
            let g = &got["results"][task][k];
            match (g.as_f64(), w.as_f64()) {
                (Some(a), Some(b)) => assert!(
                    (a - b).abs() <= 1e-9 * (1.0 + b.abs()),
                    "{task} {k}: {a} vs {b}"
                ),
                _ => assert_eq!(g, w, "{task} {k}"),
            }
        }
    }
}

fn read_json_path(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn gsm8k_asks_for_more_tokens_than_the_tiny_model_holds() {
    // lm-eval's gsm8k.yaml generates up to 256 tokens; lm-eval refuses that on a model of 64
    // positions ("Invalid configuration"), and graft says so in one line too.
    let dir = tempfile::tempdir().unwrap();
    let o = graft(&[
        "eval",
        "--model",
        &model(),
        "--include-path",
        fixture("eval/lm_eval_tasks").to_str().unwrap(),
        "--datasets-dir",
        fixture("eval/mirror").to_str().unwrap(),
        "--tasks",
        "gsm8k",
        "--num-fewshot",
        "1",
        "--output",
        dir.path().join("e").to_str().unwrap(),
    ]);
    assert_user_error(&o, &["gsm8k.yaml", "max_gen_toks 256", "64"]);
}
