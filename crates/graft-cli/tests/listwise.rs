//! Ranked-list preference training (LiPO-λ), MinorDPO and RSO end to end on the tiny llama fixture:
//! list rows train and separate their responses in the labelled order; bad lists are named.

mod common;
use common::*;

use std::path::{Path, PathBuf};

use graft_testkit::fixture;

fn write_rows(dir: &Path, name: &str, rows: &[serde_json::Value]) -> PathBuf {
    let path = dir.join(name);
    let text: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    std::fs::write(&path, text.join("\n")).unwrap();
    path
}

fn recipe(dir: &Path, train: &Path, objective: &str, steps: usize) -> PathBuf {
    let path = dir.join(format!(
        "{}.toml",
        objective.replace(['{', '}', ' ', '"', '=', ','], "")
    ));
    std::fs::write(
        &path,
        format!(
            "[model]\npath = {:?}\n[data]\ntrain = {:?}\neval = {:?}\nmax_seq_len = 32\n[objective]\n{objective}\n\
             [train]\nsteps = {steps}\nbatch_size = 4\nlr = 3e-3\nschedule = \"constant\"\nlog_every = 1\neval_every = {steps}\nsave_every = 0\n",
            fixture("models/llama").display().to_string(),
            train.display().to_string(),
            train.display().to_string(),
        ),
    )
    .unwrap();
    path
}

fn lists() -> Vec<serde_json::Value> {
    let animals = ["cat", "dog", "bird", "fox"];
    animals
        .iter()
        .map(|a| {
            serde_json::json!({
                "prompt": format!("the {a}"),
                "responses": [" sat down.", " ran off fast and far.", " barked loud all night."],
                "scores": [2.0, 1.0, 0.0],
            })
        })
        .collect()
}

#[test]
fn lipo_trains_on_ranked_lists() {
    let dir = tempfile::tempdir().unwrap();
    let train = write_rows(dir.path(), "lists.jsonl", &lists());
    let r = recipe(dir.path(), &train, "kind = \"lipo\"\nbeta = 0.5", 15);
    let out = dir.path().join("lipo");
    let o = graft(&[
        "train",
        r.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = metrics(&out);
    let eval = |row: &serde_json::Value| row["eval_loss"].as_f64();
    let first = m.iter().find_map(eval).unwrap();
    let last = m.iter().rev().find_map(eval).unwrap();
    assert!(last < 0.5 * first, "eval loss {first} → {last}");
    // Step 0: policy = reference, every s_i = 0, ranks in list order; ψ = (2, 1, 0) gives
    // G = (3, 1, 0), 1/log₂(1+τ) = (1, 0.631, 0.5), and K/n_pairs = 1:
    // ln 2 · (2·0.369 + 3·0.5 + 1·0.131) = 1.6422.
    let d = |t: f64| 1.0 / (1.0 + t).log2();
    let want = std::f64::consts::LN_2
        * (2.0 * (d(1.0) - d(2.0)) + 3.0 * (d(1.0) - d(3.0)) + (d(2.0) - d(3.0)));
    assert!((first - want).abs() < 1e-4, "step-0 loss {first} vs {want}");
    let trained = m
        .iter()
        .rev()
        .find(|r| r.get("rewards/accuracies").is_some())
        .unwrap();
    let acc = trained["rewards/accuracies"].as_f64().unwrap();
    assert!(acc > 0.99, "every labelled pair ordered at the end: {acc}");
    assert!(
        trained["rewards/margins"].as_f64().unwrap() > 0.0,
        "{trained}"
    );
}

#[test]
fn minor_dpo_trains_on_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let pairs: Vec<serde_json::Value> = lists()
        .iter()
        .map(|l| {
            serde_json::json!({"prompt": l["prompt"], "chosen": l["responses"][0], "rejected": l["responses"][2]})
        })
        .collect();
    let train = write_rows(dir.path(), "pairs.jsonl", &pairs);
    let r = recipe(dir.path(), &train, "kind = \"minor_dpo\"\nbeta = 0.5", 10);
    let out = dir.path().join("minor");
    let o = graft(&[
        "train",
        r.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = metrics(&out);
    let first = m.iter().find_map(|r| r["eval_loss"].as_f64()).unwrap();
    // policy = reference at step 0: the loss is ln 2
    assert!((first - std::f64::consts::LN_2).abs() < 1e-3, "{first}");
    let last = m
        .iter()
        .rev()
        .find(|r| r.get("rewards/margins").is_some())
        .unwrap();
    assert!(last["rewards/margins"].as_f64().unwrap() > 0.0, "{last}");
}

#[test]
fn bad_lists_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let owl = |responses: &[&str], scores: &[f64]| serde_json::json!({"prompt": "the owl", "responses": responses, "scores": scores});
    // (file, objective, row 3 of the lists, what the error names)
    let cases = [
        (
            "one",
            "lipo",
            Some(owl(&[" hoots."], &[1.0])),
            vec!["one.jsonl:3", "responses", "two or more"],
        ),
        (
            "tied",
            "lipo",
            Some(owl(&[" hoots.", " sleeps."], &[1.0, 1.0])),
            vec!["tied.jsonl:3", "scores", "all equal"],
        ),
        (
            "short",
            "lipo",
            Some(owl(&[" hoots.", " sleeps."], &[1.0, 0.0])),
            vec!["short.jsonl:3", "2 responses", "first row has 3"],
        ),
        // A pairwise objective does not take lists.
        ("lists", "dpo", None, vec!["lists.jsonl:1", "chosen"]),
    ];
    for (name, kind, row, needles) in cases {
        let mut rows = lists();
        if let Some(r) = row {
            rows[2] = r;
        }
        let train = write_rows(dir.path(), &format!("{name}.jsonl"), &rows);
        let r = recipe(dir.path(), &train, &format!("kind = \"{kind}\""), 2);
        let out = dir.path().join(name);
        let o = graft(&[
            "train",
            r.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        assert_user_error(&o, &needles);
    }
}

/// RSO end to end: candidates sampled from the policy, scored (here by a stand-in reward: the
/// response's length), rejection-sampled into pairs whose chosen side has the higher reward, and
/// trained with the hinge loss.
#[test]
fn rso_samples_scores_pairs_and_trains() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = write_rows(
        dir.path(),
        "prompts.jsonl",
        &["the cat", "a dog", "the bird"]
            .iter()
            .map(|p| serde_json::json!({ "prompt": p }))
            .collect::<Vec<_>>(),
    );
    let cands = dir.path().join("cands.jsonl");
    let model = fixture("models/llama");
    let o = graft(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--input",
        prompts.to_str().unwrap(),
        "--samples",
        "8",
        "--temperature",
        "1.0",
        "--max-new-tokens",
        "6",
        "--output",
        cands.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut rows: Vec<serde_json::Value> = std::fs::read_to_string(&cands)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    for r in rows.iter_mut() {
        let responses = r["responses"].as_array().unwrap().clone();
        assert_eq!(responses.len(), 8);
        let scores: Vec<f64> = responses
            .iter()
            .map(|t| t.as_str().unwrap().len() as f64)
            .collect();
        r["scores"] = serde_json::json!(scores);
    }
    let scored = write_rows(dir.path(), "scored.jsonl", &rows);
    let pairs = dir.path().join("pairs.jsonl");
    let o = graft(&[
        "data",
        "rso",
        "--input",
        scored.to_str().unwrap(),
        "--output",
        pairs.to_str().unwrap(),
        "--num-samples",
        "4",
        "--beta",
        "0.5",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out: Vec<serde_json::Value> = std::fs::read_to_string(&pairs)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!out.is_empty() && out.len() <= 6, "{} pairs", out.len());
    for p in &out {
        assert!(p["score_chosen"].as_f64() > p["score_rejected"].as_f64());
        assert_eq!(
            p["chosen"].as_str().unwrap().len() as f64,
            p["score_chosen"].as_f64().unwrap()
        );
    }
    let r = recipe(dir.path(), &pairs, "kind = \"slic\"\nbeta = 0.5", 2);
    let o = graft(&[
        "train",
        r.to_str().unwrap(),
        "--output",
        dir.path().join("rso").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Bad input is named.
    rows[1]["scores"] = serde_json::json!([1.0]);
    let bad = write_rows(dir.path(), "bad.jsonl", &rows);
    let o = graft(&[
        "data",
        "rso",
        "--input",
        bad.to_str().unwrap(),
        "--output",
        dir.path().join("bad_pairs.jsonl").to_str().unwrap(),
    ]);
    assert_user_error(&o, &["bad.jsonl:2", "8 responses but 1 scores"]);
}
