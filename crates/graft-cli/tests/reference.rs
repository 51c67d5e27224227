//! The reference model of preference objectives: another path, and SALSA's weight soup.

mod common;
use common::*;

use std::path::Path;

use graft_testkit::fixture;

/// A copy of the tiny llama with every weight scaled by `scale`.
fn scaled_copy(dir: &Path, scale: f64) -> std::path::PathBuf {
    let out = dir.join(format!("llama-x{scale}"));
    copy_dir(&fixture("models/llama"), &out);
    let tensors =
        candle_core::safetensors::load(out.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let scaled: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .map(|(k, t)| (k, (t * scale).unwrap()))
        .collect();
    candle_core::safetensors::save(&scaled, out.join("model.safetensors")).unwrap();
    out
}

fn dpo_recipe(dir: &Path, reference: &str) -> std::path::PathBuf {
    let rows: Vec<String> = [
        ("the cat", " sat.", " ran off fast."),
        ("a dog", " slept.", " barked loud."),
    ]
    .iter()
    .map(|(p, c, r)| serde_json::json!({"prompt": p, "chosen": c, "rejected": r}).to_string())
    .collect();
    let train = dir.join("prefs.jsonl");
    std::fs::write(&train, rows.join("\n")).unwrap();
    let recipe = dir.join("dpo.toml");
    std::fs::write(&recipe, format!(
        "[model]\npath = {:?}\n[data]\ntrain = {:?}\nmax_seq_len = 32\n[objective]\nkind = \"dpo\"\nbeta = 0.1\n{reference}\n\
         [train]\nsteps = 1\nbatch_size = 2\nlog_every = 1\nsave_every = 0\n",
        fixture("models/llama").display().to_string(), train.display().to_string())).unwrap();
    recipe
}

#[test]
fn reference_path_and_salsa_soup() {
    let dir = tempfile::tempdir().unwrap();
    let same = fixture("models/llama").display().to_string();
    let other = scaled_copy(dir.path(), 1.1);
    let half = scaled_copy(dir.path(), 0.9);
    // Reference = the starting model (by path): policy = reference, so the step-0 loss is ln 2.
    let r = dpo_recipe(dir.path(), &format!("[reference]\npath = {same:?}"));
    let m = train_ok(&r, &dir.path().join("same"), &[]);
    assert!(
        (m[0]["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-5,
        "{}",
        m[0]
    );
    // Another reference: the policy differs from it, so the loss moves off ln 2.
    let r = dpo_recipe(
        dir.path(),
        &format!("[reference]\npath = {:?}", other.display().to_string()),
    );
    let m = train_ok(&r, &dir.path().join("other"), &[]);
    assert!(
        (m[0]["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() > 1e-4,
        "{}",
        m[0]
    );
    // SALSA: the average of ×1.1 and ×0.9 copies is the starting model itself: ln 2 again.
    let r = dpo_recipe(
        dir.path(),
        &format!(
            "[reference]\nsoup = [{:?}, {:?}]",
            other.display().to_string(),
            half.display().to_string()
        ),
    );
    let m = train_ok(&r, &dir.path().join("soup"), &[]);
    assert!(
        (m[0]["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-5,
        "{}",
        m[0]
    );
    // Weighted 3:1 it is not.
    let r = dpo_recipe(
        dir.path(),
        &format!(
            "[reference]\nsoup = [{:?}, {:?}]\nweights = [3, 1]",
            other.display().to_string(),
            half.display().to_string()
        ),
    );
    let m = train_ok(&r, &dir.path().join("soup31"), &[]);
    assert!(
        (m[0]["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() > 1e-4,
        "{}",
        m[0]
    );

    // Bad: a soup of models with different shapes names the tensor; a reference for a
    // reference-free objective is refused.
    let r = dpo_recipe(
        dir.path(),
        &format!(
            "[reference]\nsoup = [{same:?}, {:?}]",
            fixture("models/qwen2").display().to_string()
        ),
    );
    let o = graft(&[
        "train",
        r.to_str().unwrap(),
        "--output",
        dir.path().join("bad").to_str().unwrap(),
    ]);
    assert_user_error(&o, &["reference.soup"]);
    let r = dpo_recipe(dir.path(), &format!("[reference]\npath = {same:?}"));
    let t = std::fs::read_to_string(&r)
        .unwrap()
        .replace("kind = \"dpo\"", "kind = \"simpo\"");
    std::fs::write(&r, t).unwrap();
    let o = graft(&[
        "train",
        r.to_str().unwrap(),
        "--output",
        dir.path().join("bad2").to_str().unwrap(),
    ]);
    assert_user_error(&o, &["reference", "simpo"]);
}

#[test]
fn reference_log_probs_are_cached_by_the_references_content() {
    let dir = tempfile::tempdir().unwrap();
    let other = scaled_copy(dir.path(), 1.1);
    let r = dpo_recipe(
        dir.path(),
        &format!("[reference]\npath = {:?}", other.display().to_string()),
    );
    let edit = |n: usize, reference: &Path| {
        let t = std::fs::read_to_string(&r).unwrap();
        let t = t
            .lines()
            .map(|l| match l {
                l if l.starts_with("steps = ") => format!("steps = {n}"),
                l if l.starts_with("path = ") && l.contains("llama-x") => {
                    format!("path = {:?}", reference.display().to_string())
                }
                l => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&r, t.replace("save_every = 0", "save_every = 1")).unwrap();
    };
    edit(2, &other);
    let out = dir.path().join("run");
    let first = train_ok(&r, &out, &[]);
    let cache = out.join("reference_logps.safetensors");
    let cached = std::fs::read(&cache).unwrap();
    let modified = || std::fs::metadata(&cache).unwrap().modified().unwrap();
    let written = modified();
    // The reference moved: same content, so its cache is reused as it is.
    let moved = dir.path().join("moved-reference");
    std::fs::rename(&other, &moved).unwrap();
    edit(3, &moved);
    let resumed = train_ok(&r, &out, &["--resume"]);
    assert_eq!(resumed.len(), 3);
    assert_eq!(resumed[0]["loss"], first[0]["loss"]);
    assert_eq!(modified(), written, "the cache was rewritten");
    // The reference rewritten in place (same path): the cache no longer matches and is redone.
    let rescaled = scaled_copy(dir.path(), 1.3);
    std::fs::copy(
        rescaled.join("model.safetensors"),
        moved.join("model.safetensors"),
    )
    .unwrap();
    let out2 = dir.path().join("run2");
    std::fs::create_dir_all(&out2).unwrap();
    std::fs::write(out2.join("reference_logps.safetensors"), &cached).unwrap();
    let again = train_ok(&r, &out2, &[]);
    assert_ne!(again[0]["loss"], first[0]["loss"]);
    assert_ne!(
        std::fs::read(out2.join("reference_logps.safetensors")).unwrap(),
        cached
    );
    // A missing reference cannot be verified: named, even with a cache beside the run.
    std::fs::remove_dir_all(&moved).unwrap();
    let o = graft(&[
        "train",
        r.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--resume",
    ]);
    assert_user_error(&o, &["moved-reference"]);
}

#[test]
fn the_output_folder_is_checked_before_the_reference_cache_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let r = dpo_recipe(dir.path(), "");
    let out = dir.path().join("run");
    train_ok(&r, &out, &[]);
    let cache = out.join("reference_logps.safetensors");
    std::fs::remove_file(&cache).unwrap();
    let o = graft(&[
        "train",
        r.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_user_error(&o, &["holds an earlier run"]);
    assert!(!cache.exists(), "the refused run wrote its cache");
}
