//! `graft merge` on mergekit's configs (tests/fixtures/merge; the numbers themselves are checked
//! against mergekit in graft-merge's tests): paths from the working directory, the output
//! folder, and one-line errors for bad configs with nothing written.

mod common;
use common::*;

use std::process::Command;

use graft_testkit::fixture;

fn merge_in_fixtures(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_graft"))
        .arg("merge")
        .args(args)
        .current_dir(fixture("merge"))
        .output()
        .expect("graft runs")
}

#[test]
fn merges_a_mergekit_config_from_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("slerp");
    let o = merge_in_fixtures(&["configs/slerp_gradient.yml", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("merged 30 tensors (3 layers"),
        "{}",
        stderr(&o)
    );
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    // The merged model loads and scores.
    let input = dir.path().join("rows.jsonl");
    std::fs::write(&input, "{\"text\": \"the cat sat\"}\n").unwrap();
    let o = graft(&[
        "score",
        "--model",
        out.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Refuses to overwrite.
    let o = merge_in_fixtures(&["configs/slerp_gradient.yml", "--out", out.to_str().unwrap()]);
    assert_user_error(&o, &["already exists"]);
}

#[test]
fn bad_configs_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(fixture("merge/configs/slerp_gradient.yml")).unwrap();
    let cases = [
        (
            format!("{base}frobnicate: 1\n"),
            vec!["frobnicate", "not supported"],
        ),
        (
            base.replace("- value: 0.5", "- value: 1.5"),
            vec!["t = 1.5", "[0, 1]", "model.embed_tokens.weight"],
        ),
        (
            base.replace(
                "merge_method: slerp",
                "merge_method: slerp\nparameters_typo: 1",
            ),
            vec!["parameters_typo"],
        ),
        (
            base.replace("models/ft_b", "models/nowhere"),
            vec!["models/nowhere"],
        ),
        (
            base.replace("parameters:\n", "parameters:\n  density: 0.5\n"),
            vec!["density", "slerp"],
        ),
    ];
    for (i, (yaml, needles)) in cases.iter().enumerate() {
        let cfg = dir.path().join(format!("c{i}.yml"));
        std::fs::write(&cfg, yaml).unwrap();
        let out = dir.path().join(format!("out{i}"));
        let o = merge_in_fixtures(&[cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let shown = cfg.display().to_string();
        let mut needles = needles.clone();
        needles.push(&shown);
        assert_user_error(&o, &needles);
        assert!(!out.exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }
}

#[test]
fn a_truncated_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad");
    copy_dir(&fixture("merge/models/base"), &bad);
    let st = bad.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let cfg = dir.path().join("c.yml");
    std::fs::write(
        &cfg,
        format!(
            "models:\n  - {{model: {}, parameters: {{weight: 1.0}}}}\nmerge_method: linear\n",
            bad.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = merge_in_fixtures(&[cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_user_error(&o, &["model.safetensors", "corrupt safetensors"]);
    assert!(!out.exists());
}

#[test]
fn shapes_and_offsets_that_overflow_are_named() {
    // Header claims whose products overflow usize: an error naming the file, never a panic.
    for (shape, offsets) in [
        ("[4294967296, 4294967296, 4294967296]", "[0, 0]"),
        ("[2, 2]", "[0, 18446744073709551615]"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad");
        copy_dir(&fixture("merge/models/base"), &bad);
        let header =
            format!(r#"{{"w": {{"dtype": "F32", "shape": {shape}, "data_offsets": {offsets}}}}}"#);
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        std::fs::write(bad.join("model.safetensors"), bytes).unwrap();
        let cfg = dir.path().join("c.yml");
        std::fs::write(
            &cfg,
            format!(
                "models:\n  - {{model: {}, parameters: {{weight: 1.0}}}}\nmerge_method: linear\n",
                bad.display()
            ),
        )
        .unwrap();
        let out = dir.path().join("out");
        let o = merge_in_fixtures(&[cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert_user_error(&o, &["model.safetensors", "does not fit"]);
        assert!(!out.exists());
    }
}

#[test]
fn an_added_token_id_far_past_the_vocabulary_is_an_error() {
    // ft_v's tokenizer claims an added token at id u32::MAX and a vocabulary to match: the
    // union must not size anything by that id (an error naming the gap, quickly).
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    for m in ["ft_a", "ft_v"] {
        copy_dir(&fixture("merge/models").join(m), &models.join(m));
    }
    let tok = models.join("ft_v/tokenizer.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tok).unwrap()).unwrap();
    v["added_tokens"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"id": 4294967295u64, "content": "<far>", "special": true}));
    std::fs::write(&tok, v.to_string()).unwrap();
    let cfg_path = models.join("ft_v/config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["vocab_size"] = serde_json::json!(4294967296u64);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let config = dir.path().join("union.yml");
    let text = std::fs::read_to_string(fixture("merge/configs/linear_tokenizer_union.yml"))
        .unwrap()
        .replace("base_model: models/ft_a", "base_model: models/ft_v");
    std::fs::write(&config, text).unwrap();
    let out = dir.path().join("out");
    let start = std::time::Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_graft"))
        .args([
            "merge",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_user_error(&o, &["ft_v"]);
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    assert!(!out.exists());
}
