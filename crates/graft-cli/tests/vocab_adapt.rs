//! `graft vocab train` (ids equal transformers' on the trained folders, bad sizes), `vocab
//! extend` against PyTorch's FVT means, `--tokens` and `--init normal`, and the
//! embeddings-only stage (`[train] trainable`, `new_rows_only`) on an extended model.

mod common;
use common::*;

use candle_core::Device;
use graft_testkit::fixture;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn tensors(dir: &Path) -> HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

fn rows(t: &candle_core::Tensor, from: usize, n: usize) -> Vec<Vec<f32>> {
    t.narrow(0, from, n).unwrap().to_vec2().unwrap()
}

fn train_tokenizer(out: &Path, extra: &[&str]) -> std::process::Output {
    let corpus = fixture("vocab/train_corpus.txt");
    let mut args = vec![
        "vocab",
        "train",
        "--corpus",
        corpus.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    graft(&args)
}

#[test]
fn trained_tokenizers_encode_as_transformers_does() {
    // tools/fixtures/make_vocab_fixtures.py: transformers' ids on folders graft trained.
    let doc = json(&fixture("vocab/trained_ids.json"));
    let dir = tempfile::tempdir().unwrap();
    let llama = fixture("models/llama");
    for (name, want) in doc["tokenizers"].as_object().unwrap() {
        let args: Vec<String> = want["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .map(|a| match a.ends_with("tests/fixtures/models/llama") {
                true => llama.display().to_string(),
                false => a,
            })
            .collect();
        let out = dir.path().join(name);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = train_tokenizer(&out, &args);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let tok = graft_models::open_tokenizer(&out).unwrap().0;
        assert_eq!(
            json!(tok.inner.get_vocab_size(true)),
            want["vocab_size"],
            "{name}"
        );
        for (text, ids) in doc["samples"]
            .as_array()
            .unwrap()
            .iter()
            .zip(want["ids"].as_array().unwrap())
        {
            let got = tok.encode(text.as_str().unwrap(), true).unwrap();
            assert_eq!(json!(got), *ids, "{name}: {text}");
        }
    }
    // --like keeps the model's added tokens first and its post-processor's BOS.
    let like = graft_models::open_tokenizer(&dir.path().join("bpe_like_llama"))
        .unwrap()
        .0;
    for (i, t) in ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
        .iter()
        .enumerate()
    {
        assert_eq!(like.token_to_id(t), Some(i as u32), "{t}");
    }
    assert_eq!(like.encode("gatto", true).unwrap()[0], 1);
    // The byte-level default decodes what it encodes.
    let bpe = graft_models::open_tokenizer(&dir.path().join("bpe"))
        .unwrap()
        .0;
    let text = "Parole nuove: ornitorinco 🦙, caffè.";
    assert_eq!(
        bpe.decode(&bpe.encode(text, false).unwrap(), false)
            .unwrap(),
        text
    );

    // Bad input: exit 2, one line naming the flag, nothing written.
    let bad = dir.path().join("bad");
    for (extra, needles) in [
        (
            vec!["--vocab-size", "200"],
            vec!["--vocab-size 200", "byte symbols"],
        ),
        (
            vec!["--vocab-size", "250", "--like", llama.to_str().unwrap()],
            vec!["--vocab-size 250", "reserved"],
        ),
        (
            vec!["--vocab-size", "20", "--kind", "unigram"],
            vec!["--vocab-size 20"],
        ),
        (
            vec!["--vocab-size", "500", "--kind", "wordpiece"],
            vec!["--kind", "wordpiece"],
        ),
    ] {
        let o = train_tokenizer(&bad, &extra);
        assert_user_error(&o, &needles);
        assert!(!bad.exists());
    }
}

#[test]
fn extend_rows_are_pytorchs_fvt_means_and_tokens_and_normal_init_work() {
    let doc = json(&fixture("vocab/fvt_rows.json"));
    let dir = tempfile::tempdir().unwrap();
    let base = fixture("models/llama");
    let corpus = fixture("vocab/train_corpus.txt");
    let (b, c) = (base.to_str().unwrap(), corpus.to_str().unwrap());
    let out = dir.path().join("fvt");
    let o = graft(&[
        "vocab",
        "extend",
        "--model",
        b,
        "--corpus",
        c,
        "--add",
        "4",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (old, new) = (tensors(&base), tensors(&out));
    let tok = graft_models::open_tokenizer(&out).unwrap().0;
    for (k, want) in doc["rows"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            json!(tok.inner.id_to_token(128 + k as u32).unwrap()),
            want["token"]
        );
        for name in ["model.embed_tokens.weight", "lm_head.weight"] {
            let got = &rows(&new[name], 128 + k, 1)[0];
            for (g, w) in got.iter().zip(want[name].as_array().unwrap()) {
                assert!(
                    (g - w.as_f64().unwrap() as f32).abs() < 1e-6,
                    "{name} row {k}"
                );
            }
        }
    }
    assert_eq!(
        json(&out.join("config.json"))["graft_vocab_extended_from"],
        json!(128)
    );
    // transformers' ids on the extended tokenizer and on the fixture trimmed to the corpus.
    let trimmed = dir.path().join("trimmed");
    let o = graft(&[
        "vocab",
        "trim",
        "--model",
        b,
        "--corpus",
        c,
        "--output",
        trimmed.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t5_trimmed = dir.path().join("t5_trimmed");
    let t5 = fixture("models/t5");
    let o = graft(&[
        "vocab",
        "trim",
        "--model",
        t5.to_str().unwrap(),
        "--corpus",
        c,
        "--output",
        t5_trimmed.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (name, folder) in [
        ("extended", &out),
        ("trimmed", &trimmed),
        ("t5_trimmed", &t5_trimmed),
    ] {
        let tok = graft_models::open_tokenizer(folder).unwrap().0;
        let samples = doc["samples"].as_array().unwrap();
        for (text, want) in samples.iter().zip(doc["ids"][name].as_array().unwrap()) {
            let got = tok.encode(text.as_str().unwrap(), true).unwrap();
            assert_eq!(json!(got), *want, "{name}: {text}");
        }
    }

    // --tokens: each listed token becomes one token; --init normal draws near the old rows' mean,
    // the same for one seed.
    let list = dir.path().join("tokens.txt");
    std::fs::write(&list, "▁gatto\n▁biblioteca\n").unwrap();
    let run = |out: &Path, seed: &str| {
        let o = graft(&[
            "vocab",
            "extend",
            "--model",
            b,
            "--tokens",
            list.to_str().unwrap(),
            "--init",
            "normal",
            "--seed",
            seed,
            "--output",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        tensors(out)["model.embed_tokens.weight"].clone()
    };
    let (x, y, z) = (
        run(&dir.path().join("n1"), "1"),
        run(&dir.path().join("n2"), "1"),
        run(&dir.path().join("n3"), "2"),
    );
    let added = x.dim(0).unwrap() - 128;
    assert!(added >= 2);
    assert_eq!(rows(&x, 128, added), rows(&y, 128, added));
    assert_ne!(rows(&x, 128, added), rows(&z, 128, added));
    assert_eq!(
        rows(&x, 0, 128),
        rows(&old["model.embed_tokens.weight"], 0, 128)
    );
    let mean: Vec<f32> = old["model.embed_tokens.weight"]
        .mean(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    for r in rows(&x, 128, added) {
        let off = r
            .iter()
            .zip(&mean)
            .map(|(a, m)| (a - m).abs())
            .fold(0f32, f32::max);
        assert!(
            off > 0.0 && off < 1e-3,
            "a draw of N(mean, 1e-9 cov): {off}"
        );
    }
    let tok = graft_models::open_tokenizer(&dir.path().join("n1"))
        .unwrap()
        .0;
    for t in ["gatto", "biblioteca"] {
        assert_eq!(tok.encode(t, false).unwrap().len(), 1, "{t}");
    }
    // A token the merges cannot build: exit 2, nothing written.
    std::fs::write(&list, "▁🦙\n").unwrap();
    let bad = dir.path().join("bad");
    let o = graft(&[
        "vocab",
        "extend",
        "--model",
        b,
        "--tokens",
        list.to_str().unwrap(),
        "--output",
        bad.to_str().unwrap(),
    ]);
    assert_user_error(&o, &["--tokens", "byte-fallback"]);
    assert!(!bad.exists());
    // A tokenizer without merges (T5's Unigram) cannot be extended.
    let t5 = fixture("models/t5");
    let o = graft(&[
        "vocab",
        "extend",
        "--model",
        t5.to_str().unwrap(),
        "--tokens",
        list.to_str().unwrap(),
        "--output",
        bad.to_str().unwrap(),
    ]);
    assert_user_error(&o, &["supports BPE", "Unigram"]);
    assert!(!bad.exists());
}

#[test]
fn embeddings_only_stage_trains_only_the_new_rows() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixture("models/llama");
    let corpus = fixture("vocab/train_corpus.txt");
    let ext = dir.path().join("ext");
    let o = graft(&[
        "vocab",
        "extend",
        "--model",
        base.to_str().unwrap(),
        "--corpus",
        corpus.to_str().unwrap(),
        "--add",
        "8",
        "--output",
        ext.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let recipe = |extra: &str| {
        let path = dir.path().join("recipe.toml");
        std::fs::write(&path, format!(
            "[model]\npath = {:?}\n[data]\ntrain = {:?}\nmax_seq_len = 32\n[objective]\nkind = \"lm\"\n\
             [train]\nsteps = 3\nbatch_size = 4\nlr = 1e-2\nweight_decay = 0.1\nschedule = \"constant\"\nsave_every = 2\n{extra}",
            ext.display().to_string(), corpus.display().to_string())).unwrap();
        path
    };
    let out = dir.path().join("run");
    train_ok(
        &recipe("trainable = [\"embed_tokens\", \"lm_head\"]\nnew_rows_only = true\n"),
        &out,
        &[],
    );
    let (before, after) = (tensors(&ext), tensors(&out.join("final")));
    for name in ["model.embed_tokens.weight", "lm_head.weight"] {
        assert_eq!(
            rows(&after[name], 0, 128),
            rows(&before[name], 0, 128),
            "{name}: old rows"
        );
        assert_ne!(
            rows(&after[name], 128, 8),
            rows(&before[name], 128, 8),
            "{name}: new rows"
        );
    }
    for (name, t) in &before {
        if !name.contains("embed_tokens") && !name.contains("lm_head") {
            let same = (t - &after[name])
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            assert_eq!(same.to_scalar::<f32>().unwrap(), 0.0, "{name} frozen");
        }
    }
    // Only the trained variables have optimizer state.
    let opt = candle_core::safetensors::load(
        out.join("checkpoint-2/optimizer.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert!(
        opt.keys()
            .all(|k| k.contains("embed_tokens") || k.contains("lm_head")),
        "{:?}",
        opt.keys()
    );
    // Bad recipes: exit 2 naming the key.
    for (extra, needles) in [
        (
            "trainable = [\"no_such_module\"]\n",
            vec!["train.trainable", "no_such_module"],
        ),
        (
            "trainable = [\"mlp\"]\nnew_rows_only = true\n",
            vec!["train.new_rows_only", "no embedding"],
        ),
    ] {
        let o = graft(&[
            "train",
            recipe(extra).to_str().unwrap(),
            "--output",
            dir.path().join("bad").to_str().unwrap(),
        ]);
        assert_user_error(&o, &needles);
    }
    // A model that was not extended has no new rows.
    let plain = recipe("new_rows_only = true\n");
    let text = std::fs::read_to_string(&plain).unwrap();
    std::fs::write(
        &plain,
        text.replace(&ext.display().to_string(), &base.display().to_string()),
    )
    .unwrap();
    let o = graft(&[
        "train",
        plain.to_str().unwrap(),
        "--output",
        dir.path().join("bad2").to_str().unwrap(),
    ]);
    assert_user_error(&o, &["train.new_rows_only", "graft_vocab_extended_from"]);
}

#[test]
fn transplant_copies_shared_rows_and_builds_the_rest_by_fvt_or_omp() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixture("models/llama");
    let b = base.to_str().unwrap();
    let (like, bpe) = (dir.path().join("like"), dir.path().join("bpe"));
    for (out, extra) in [
        (&like, vec!["--vocab-size", "400", "--like", b]),
        (&bpe, vec!["--vocab-size", "400"]),
    ] {
        let o = train_tokenizer(out, &extra);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let transplant = |tok: &Path, out: &Path, extra: &[&str]| {
        let mut args = vec![
            "vocab",
            "transplant",
            "--model",
            b,
            "--tokenizer",
            tok.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        graft(&args)
    };
    let old_tok = graft_models::open_tokenizer(&base).unwrap().0;
    let old = tensors(&base);
    let names = ["model.embed_tokens.weight", "lm_head.weight"];

    // Same spelling (SentencePiece): shared tokens copy their rows, the others are FVT means.
    let fvt = dir.path().join("fvt");
    let o = transplant(&like, &fvt, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&fvt.join("config.json"))["vocab_size"], json!(400));
    let new_tok = graft_models::open_tokenizer(&fvt).unwrap().0;
    let new = tensors(&fvt);
    let (mut copied, mut built) = (0, 0);
    for id in 0..400u32 {
        let t = new_tok.inner.id_to_token(id).unwrap();
        let want: Vec<u32> = match old_tok.token_to_id(&t) {
            Some(o) => vec![o],
            None => match tokenizers::Model::tokenize(old_tok.inner.get_model(), &t) {
                Ok(p) if !p.is_empty() && p.iter().all(|x| x.id != 0) => {
                    p.iter().map(|x| x.id).collect()
                }
                _ => continue,
            },
        };
        match want.len() {
            1 => copied += 1,
            _ => built += 1,
        }
        for name in names {
            let idx = candle_core::Tensor::new(want.as_slice(), &Device::Cpu).unwrap();
            let mean: Vec<f32> = old[name]
                .index_select(&idx, 0)
                .unwrap()
                .mean(0)
                .unwrap()
                .to_vec1()
                .unwrap();
            let got = &rows(&new[name], id as usize, 1)[0];
            for (g, w) in got.iter().zip(&mean) {
                assert!((g - w).abs() < 1e-6, "{name} `{t}`: {g} vs {w}");
            }
        }
    }
    assert!(copied > 30 && built > 20, "{copied} copied, {built} built");

    // Across spellings: a byte-level `Ġx` is the model's `▁x`; BOS moves to the new tokenizer's.
    let cross = dir.path().join("cross");
    let o = transplant(&bpe, &cross, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bl = graft_models::open_tokenizer(&cross).unwrap().0;
    let cr = tensors(&cross);
    let shared: Vec<(u32, u32)> = (0..400u32)
        .filter_map(|i| {
            let t = bl.inner.id_to_token(i)?;
            let o = old_tok.token_to_id(&format!("▁{}", t.strip_prefix('Ġ')?))?;
            Some((i, o))
        })
        .collect();
    assert!(!shared.is_empty());
    for (i, o) in shared {
        assert_eq!(
            rows(&cr["model.embed_tokens.weight"], i as usize, 1),
            rows(&old["model.embed_tokens.weight"], o as usize, 1)
        );
    }
    assert_eq!(
        json(&cross.join("config.json"))["bos_token_id"],
        json!(bl.token_to_id("<|endoftext|>").unwrap())
    );
    let source =
        graft_models::ModelSource::open(&cross, candle_core::DType::F32, &Device::Cpu).unwrap();
    let model = source.build(candle_core::DType::F32, &Device::Cpu).unwrap();
    let ids = candle_core::Tensor::new(
        bl.encode("il gatto", true).unwrap().as_slice(),
        &Device::Cpu,
    )
    .unwrap();
    let logits = model
        .forward(&ids.unsqueeze(0).unwrap(), None, false)
        .unwrap();
    assert_eq!(logits.dims()[2], 400);

    // OMP with the FVT model as the donor: a token whose pieces are all shared is rebuilt from
    // them exactly (its donor row is their mean), so OMP finds the FVT row again.
    let omp = dir.path().join("omp");
    let o = transplant(&fvt, &omp, &["--init", "omp", "--k", "8"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("by OMP"), "{}", stdout(&o));
    let om = tensors(&omp);
    let diff = (&om["model.embed_tokens.weight"] - &new["model.embed_tokens.weight"])
        .unwrap()
        .abs()
        .unwrap();
    let worst = diff.max(1).unwrap().to_vec1::<f32>().unwrap();
    let exact = worst.iter().filter(|d| **d < 1e-4).count();
    assert!(exact > 300, "{exact} of 400 rows equal the FVT ones");

    // OMP needs the new tokenizer's own model: a tokenizer-only folder is exit 2, nothing written.
    let bad = dir.path().join("bad");
    let o = transplant(&like, &bad, &["--init", "omp"]);
    assert_user_error(&o, &["like"]);
    assert!(!bad.exists());
}
