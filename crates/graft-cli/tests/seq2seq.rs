//! `graft score` and `graft generate` on encoder-decoder models (the tiny T5 fixtures) against
//! transformers (tools/fixtures/make_t5_fixtures.py), and their bad-input errors.

mod common;

use common::{assert_user_error, copy_dir, graft, stderr, stdout};
use graft_testkit::{fixture, read_json};
use serde_json::Value;

#[test]
fn score_rows_with_inputs_and_targets_match_transformers() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["t5", "t5_v11", "mt5"] {
        let expected = read_json(&format!("models/{name}/expected.json"));
        let rows: Vec<String> = expected["score_rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.to_string())
            .collect();
        let input = dir.path().join(format!("{name}.jsonl"));
        std::fs::write(&input, rows.join("\n") + "\n").unwrap();
        let model = fixture(&format!("models/{name}"));
        let o = graft(&[
            "score",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let got: Vec<Value> = stdout(&o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let want = expected["score"].as_array().unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g["input_ids"], w["input_ids"], "{name}: input ids");
            assert_eq!(
                g["target_ids"], w["target_ids"],
                "{name}: target ids (EOS-terminated)"
            );
            assert_eq!(g["num_tokens"], w["num_tokens"]);
            let (gl, wl) = (
                g["token_logprobs"].as_array().unwrap(),
                w["token_logprobs"].as_array().unwrap(),
            );
            assert_eq!(gl.len(), wl.len());
            for (a, b) in gl.iter().zip(wl) {
                let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
                assert!((a - b).abs() < 1e-4, "{name}: token logprob {a} vs {b}");
            }
            let (a, b) = (
                g["sum_logprob"].as_f64().unwrap(),
                w["sum_logprob"].as_f64().unwrap(),
            );
            assert!((a - b).abs() < 1e-3, "{name}: sum {a} vs {b}");
        }
    }
}

#[test]
fn generate_beam_search_and_greedy_match_transformers() {
    let name = "t5_v11";
    let expected = read_json(&format!("models/{name}/expected.json"));
    let model = fixture(&format!("models/{name}"));
    let prompt = "the family of Dashwood had long been settled in Sussex";
    for (extra, key) in [
        (
            vec![
                "--num-beams",
                "3",
                "--length-penalty",
                "0.6",
                "--early-stopping",
            ],
            "beam3_lp06",
        ),
        (vec![], "greedy"),
    ] {
        let mut args = vec![
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            prompt,
            "--max-new-tokens",
            "10",
            "--json",
        ];
        args.extend(extra);
        let o = graft(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let out: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(
            out["prompt_ids"], expected["input_ids"][0],
            "the prompt's ids"
        );
        let want: Vec<u64> = serde_json::from_value(expected[key][0].clone()).unwrap();
        let got: Vec<u64> = serde_json::from_value(out["completion_ids"].clone()).unwrap();
        assert_eq!(got, want[1..], "{key}");
    }
}

#[test]
fn seq2seq_bad_input_is_one_line_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("t5");
    copy_dir(&fixture("models/t5"), &model);
    let cfg_path = model.join("config.json");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg.as_object_mut()
        .unwrap()
        .remove("decoder_start_token_id");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let o = graft(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "hello",
    ]);
    assert_user_error(&o, &["config.json", "decoder_start_token_id"]);

    let rows = dir.path().join("rows.jsonl");
    std::fs::write(
        &rows,
        "{\"inputs\": \"a\", \"targets\": \"b\"}\n{\"inputs\": \"a\"}\n",
    )
    .unwrap();
    let good = fixture("models/t5");
    let o = graft(&[
        "score",
        "--model",
        good.to_str().unwrap(),
        "--input",
        rows.to_str().unwrap(),
    ]);
    assert_user_error(&o, &["rows.jsonl:2", "targets"]);

    // Seq2seq rows given to a decoder-only model: the error says what they need.
    let o = graft(&[
        "score",
        "--model",
        fixture("models/llama").to_str().unwrap(),
        "--input",
        rows.to_str().unwrap(),
    ]);
    assert_user_error(&o, &["rows.jsonl:1", "encoder-decoder"]);
}

#[test]
fn classify_picks_the_label_graft_score_rates_highest() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("models/t5_v11");
    let labels = ["estate", "family", "house"];
    let rows: Vec<Value> = [
        "first word: estate house",
        "first word: family estate",
        "the house",
    ]
    .iter()
    .zip(["estate", "family", "house"])
    .map(|(i, g)| serde_json::json!({"inputs": i, "targets": g}))
    .collect();
    let input = dir.path().join("rows.jsonl");
    std::fs::write(
        &input,
        rows.iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let preds = dir.path().join("preds.jsonl");
    let o = graft(&[
        "classify",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--labels",
        &labels.join(","),
        "--output",
        preds.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    // Each label's score is the target log-likelihood graft score gives the (input, label) pair.
    let pairs = dir.path().join("pairs.jsonl");
    let lines: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            labels
                .iter()
                .map(move |l| serde_json::json!({"inputs": r["inputs"], "targets": l}).to_string())
        })
        .collect();
    std::fs::write(&pairs, lines.join("\n")).unwrap();
    let o = graft(&[
        "score",
        "--model",
        model.to_str().unwrap(),
        "--input",
        pairs.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let sums: Vec<f64> = stdout(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["sum_logprob"]
                .as_f64()
                .unwrap()
        })
        .collect();
    let mut correct = 0;
    for (i, line) in std::fs::read_to_string(&preds).unwrap().lines().enumerate() {
        let p: Value = serde_json::from_str(line).unwrap();
        let s = &sums[i * 3..i * 3 + 3];
        let best = (0..3).fold(0, |b, j| if s[j] > s[b] { j } else { b });
        assert_eq!(p["prediction"], labels[best], "row {i}");
        for (a, b) in p["scores"].as_array().unwrap().iter().zip(s) {
            assert!((a.as_f64().unwrap() - b).abs() < 1e-4);
        }
        correct += (labels[best] == rows[i]["targets"]) as usize;
    }
    assert!(
        (summary["accuracy"].as_f64().unwrap() - correct as f64 / 3.0).abs() < 1e-12,
        "{summary}"
    );

    // A gold label outside --labels names the row and the field.
    std::fs::write(&input, "{\"inputs\": \"x\", \"targets\": \"garden\"}\n").unwrap();
    let o = graft(&[
        "classify",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--labels",
        &labels.join(","),
    ]);
    assert_user_error(&o, &["rows.jsonl:1", "targets", "garden"]);
}
