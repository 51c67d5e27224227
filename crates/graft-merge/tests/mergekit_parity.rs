//! graft merge against mergekit 0.1.5 (tests/fixtures/merge, made by
//! tools/fixtures/make_merge_fixtures.py with `mergekit-yaml CONFIG OUT --no-write-model-card`,
//! run from tests/fixtures/merge): every deterministic case's tensors to 1e-6 (relative, f32
//! outputs; one rounding step for f16/bf16 outputs) and its config.json; DARE at density 0.5
//! (torch's Bernoulli draws cannot be replayed) by the statistics mergekit's output shows; and
//! the configs mergekit rejects.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use graft_merge::{run, MergeConfig, Options};
use graft_testkit::{fixture, read_json};
use safetensors::SafeTensors;

fn dir() -> PathBuf {
    fixture("merge")
}

fn opts() -> Options {
    Options {
        seed: 42,
        shard_bytes: 5_000_000_000,
        base_dir: dir(),
    }
}

/// Every tensor of an HF folder as f32, by name.
fn tensors(d: &Path) -> HashMap<String, (Vec<f32>, Vec<usize>, safetensors::Dtype)> {
    let files: Vec<PathBuf> = std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    let mut out = HashMap::new();
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in st.tensors() {
            let data = view.data();
            let v: Vec<f32> = match view.dtype() {
                safetensors::Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                safetensors::Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                safetensors::Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                other => panic!("{other:?}"),
            };
            out.insert(name, (v, view.shape().to_vec(), view.dtype()));
        }
    }
    out
}

fn merged(case: &str, out: &Path) -> graft_merge::Summary {
    let cfg = MergeConfig::read(&dir().join(format!("configs/{case}.yml"))).unwrap();
    run(&cfg, out, &opts(), |_, _| {}).unwrap_or_else(|e| panic!("{case}: {e}"))
}

const DETERMINISTIC: &[&str] = &[
    "linear_norm",
    "linear_nonorm",
    "linear_gradient_filter",
    "linear_out_bf16",
    "linear_dtype_f16",
    "slerp_gradient",
    "slerp_colinear",
    "slerp_t_list",
    "slices_slerp",
    "task_arithmetic",
    "task_arithmetic_lambda",
    "ties",
    "ties_nonorm",
    "ties_int8_mask",
    "ties_3models_lambda",
    "dare_linear_d1",
    "dare_ties_d1",
    "model_stock",
    "passthrough_frankenmerge",
    "passthrough_scale",
    "linear_tokenizer_base",
    "linear_tokenizer_base_vocab_mismatch",
];

#[test]
fn deterministic_methods_equal_mergekit() {
    let tmp = tempfile::tempdir().unwrap();
    for case in DETERMINISTIC {
        let out = tmp.path().join(case);
        merged(case, &out);
        let (got, want) = (
            tensors(&out),
            tensors(&dir().join(format!("expected/{case}"))),
        );
        let mut names: Vec<&String> = want.keys().collect();
        names.sort();
        assert_eq!(got.len(), want.len(), "{case}: tensor count");
        for name in names {
            let (w, wshape, wdt) = &want[name];
            let (g, gshape, gdt) = got.get(name).unwrap_or_else(|| panic!("{case}: no {name}"));
            assert_eq!((gshape, gdt), (wshape, wdt), "{case}: {name}");
            // f32: 1e-6 relative to the tensor's scale; f16/bf16: one rounding step.
            let scale = w.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
            let tol = match wdt {
                safetensors::Dtype::F32 => 1e-6 * scale,
                safetensors::Dtype::F16 => 1e-3 * scale,
                _ => 8e-3 * scale,
            };
            let worst = g
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst <= tol, "{case}: {name}: max |Δ| {worst} > {tol}");
        }
        let gc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        let wc = read_json(&format!("merge/expected/{case}/config.json"));
        for key in [
            "num_hidden_layers",
            "vocab_size",
            "dtype",
            "hidden_size",
            "tie_word_embeddings",
        ] {
            assert_eq!(gc[key], wc[key], "{case}: config.json {key}");
        }
        assert!(
            out.join("tokenizer.json").exists(),
            "{case}: tokenizer copied"
        );
    }
}

#[test]
fn dare_at_half_density_has_mergekits_statistics() {
    // mergekit (seed 42): 0.247 of the elements equal the base; the output delta's L1 over task
    // arithmetic's is 1.18 (dare_linear) and 1.26 (dare_ties). Different draws, same law.
    let tmp = tempfile::tempdir().unwrap();
    let base = tensors(&dir().join("models/base"));
    let manifest = read_json("merge/manifest.json");
    let ta_out = tmp.path().join("ta");
    let cfg = MergeConfig::parse(
        &std::fs::read_to_string(dir().join("configs/dare_linear_d05.yml"))
            .unwrap()
            .replace("dare_linear", "task_arithmetic")
            .replace("density: 0.5\n", ""),
    )
    .unwrap();
    run(&cfg, &ta_out, &opts(), |_, _| {}).unwrap();
    let ta = tensors(&ta_out);
    for case in ["dare_linear_d05", "dare_ties_d05"] {
        let out = tmp.path().join(case);
        merged(case, &out);
        let got = tensors(&out);
        let (mut equal, mut total, mut l1, mut l1_ta) = (0usize, 0usize, 0f64, 0f64);
        for (name, (g, _, _)) in &got {
            let b = &base[name].0;
            for ((x, y), z) in g.iter().zip(b).zip(&ta[name].0) {
                equal += (x == y) as usize;
                total += 1;
                l1 += (x - y).abs() as f64;
                l1_ta += (z - y).abs() as f64;
            }
        }
        let stats = &manifest["cases"][case]["dare_stats"];
        let (frac, ratio) = (equal as f64 / total as f64, l1 / l1_ta);
        let want_frac = stats["fraction_elements_equal_to_base"].as_f64().unwrap();
        let want_ratio = stats["l1_delta_out_over_l1_task_arithmetic_delta"]
            .as_f64()
            .unwrap();
        assert!(
            (frac - want_frac).abs() < 0.02,
            "{case}: equal-to-base {frac} vs mergekit {want_frac}"
        );
        assert!(
            (ratio - want_ratio).abs() < 0.05,
            "{case}: L1 ratio {ratio} vs mergekit {want_ratio}"
        );
    }
}

#[test]
fn configs_mergekit_rejects_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let needles: &[(&str, &[&str])] = &[
        ("dtype_unknown", &["float8"]),
        (
            "linear_missing_weight",
            &["weight", "models/ft_b", "model.embed_tokens.weight"],
        ),
        ("model_stock_too_few", &["model_stock", "at least 3"]),
        (
            "models_and_slices",
            &["exactly one of `models` and `slices`"],
        ),
        ("passthrough_two_models", &["passthrough", "exactly 1"]),
        ("slerp_no_base", &["slerp", "base_model"]),
        ("slerp_three_models", &["slerp", "exactly 2"]),
        ("slices_unequal_ranges", &["same number of layers"]),
        ("ties_no_base", &["ties", "base_model"]),
        ("tokenizer_source_and_tokenizer", &["tokenizer"]),
        ("unknown_method", &["frobnicate"]),
        (
            "vocab_mismatch_no_tokenizer",
            &["shape", "tokenizer_source", "models/ft_v"],
        ),
    ];
    let manifest = read_json("merge/manifest.json");
    assert_eq!(manifest["errors"].as_object().unwrap().len(), needles.len());
    for (case, words) in needles {
        let path = dir().join(format!("errors/{case}.yml"));
        let out = tmp.path().join(case);
        let msg = match MergeConfig::read(&path) {
            Err(e) => e.to_string(),
            Ok(cfg) => run(&cfg, &out, &opts(), |_, _| {})
                .err()
                .unwrap_or_else(|| panic!("{case} merged"))
                .to_string(),
        };
        for w in *words {
            assert!(msg.contains(w), "{case}: `{w}` not in: {msg}");
        }
        assert!(!out.exists(), "{case}: nothing written");
    }
}
