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
