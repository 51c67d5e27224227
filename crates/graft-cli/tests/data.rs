//! `graft data`: inspect, stats (+ histogram PNG), tokenize (token cache = tokenizer output),
//! dedup (exact, near, quality; report), decontaminate (report names the eval row).

mod common;
use common::*;

use graft_testkit::fixture;
use serde_json::{json, Value};

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write(path: &std::path::Path, rows: &[Value]) {
    std::fs::write(
        path,
        rows.iter()
            .map(|r| r.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
}

const PARA: &str = "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife. However little known the feelings or views of such a man may be on his first entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families.";

#[test]
fn dedup_drops_copies_and_junk_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    write(
        &input,
        &[
            json!({"text": PARA, "id": 1}),
            json!({"text": "The weather at Bath was fine and the pump room was crowded with visitors that morning.", "id": 2}),
            json!({"text": PARA, "id": 3}),
            json!({"text": PARA.replace("surrounding families", "surrounding family"), "id": 4}),
            json!({"text": "buy now cheap buy now cheap buy now cheap buy now cheap buy now", "id": 5}),
        ],
    );
    let (out, report) = (
        dir.path().join("out.jsonl"),
        dir.path().join("report.jsonl"),
    );
    let o = graft(&[
        "data",
        "dedup",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--near",
        "--max-top-trigram-fraction",
        "0.18",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let kept: Vec<i64> = lines(&out)
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(kept, [1, 2]);
    let rep = lines(&report);
    assert_eq!(
        rep.iter()
            .map(|r| r["reason"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["exact_duplicate", "near_duplicate", "quality"]
    );
    assert_eq!(rep[0]["line"], 3);
    assert_eq!(rep[0]["of_line"], 1);
    assert_eq!(rep[1]["of_line"], 1);
}

#[test]
fn decontaminate_removes_rows_copying_an_eval_question() {
    let dir = tempfile::tempdir().unwrap();
    let eval = dir.path().join("eval.jsonl");
    write(
        &eval,
        &[
            json!({"question": "Natalia sold clips to 48 of her friends in April and then she sold half as many clips in May", "answer": "72"}),
        ],
    );
    let train = dir.path().join("train.jsonl");
    write(
        &train,
        &[
            json!({"messages": [{"role": "user", "content": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many?"}, {"role": "assistant", "content": "72"}]}),
            json!({"messages": [{"role": "user", "content": "Give me a word problem."}, {"role": "assistant", "content": "Natalia sold clips to 48 of her friends in April and then she sold half as many clips in May"}]}),
            json!({"prompt": "What is the capital of France?", "completion": "Paris"}),
        ],
    );
    let (out, report) = (
        dir.path().join("out.jsonl"),
        dir.path().join("report.jsonl"),
    );
    let o = graft(&[
        "data",
        "decontaminate",
        "--input",
        train.to_str().unwrap(),
        "--eval",
        eval.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Only user turns count (as open-instruct indexes them): the assistant-turn copy stays.
    assert_eq!(lines(&out).len(), 2);
    let rep = lines(&report);
    assert_eq!(rep.len(), 1);
    assert_eq!(rep[0]["line"], 1);
    assert_eq!(rep[0]["eval_line"], 1);
    assert!(rep[0]["overlap"].as_f64().unwrap() > 0.9);
}

#[test]
fn tokenize_writes_a_cache_equal_to_the_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("text.jsonl");
    write(
        &input,
        &[json!({"text": "Hello there."}), json!({"text": PARA})],
    );
    let cache = dir.path().join("cache");
    let model = fixture("models/llama");
    let o = graft(&[
        "data",
        "tokenize",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        cache.to_str().unwrap(),
        "--eos",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Pretraining reads the cache directly ([data] train = the cache folder).
    let recipe = dir.path().join("r.toml");
    std::fs::write(&recipe, format!("[model]\npath = {:?}\n[data]\ntrain = {:?}\nmax_seq_len = 16\npacking = true\n\
        [objective]\nkind = \"lm\"\n[train]\nsteps = 3\nbatch_size = 2\nlog_every = 1\nsave_every = 0\n",
        model.display().to_string(), cache.display().to_string())).unwrap();
    let m = train_ok(&recipe, &dir.path().join("run"), &[]);
    assert_eq!(m.len(), 3);
    let c = graft_data::token_cache::TokenCache::open(&cache).unwrap();
    let tok = graft_models::Tokenizer::from_hf_dir(&model).unwrap();
    assert_eq!(c.info.dtype, "u16");
    for (i, text) in ["Hello there.", PARA].iter().enumerate() {
        let mut want = tok.encode(text, true).unwrap();
        want.push(tok.eos_id.unwrap());
        assert_eq!(c.document(i), want);
    }
}

#[test]
fn stats_inspect_and_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rows.jsonl");
    write(
        &input,
        &[
            json!({"text": "one two three", "language": "en"}),
            json!({"text": "uno due", "language": "it"}),
            json!({"text": "quattro", "language": "it"}),
        ],
    );
    let png = dir.path().join("len.png");
    let o = graft(&[
        "data",
        "stats",
        input.to_str().unwrap(),
        "--group-by",
        "language",
        "--plot",
        png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s: Value = serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
    assert_eq!(s["rows"], 3);
    assert_eq!(s["words"], 6);
    assert_eq!(s["groups"]["it"]["rows"], 2);
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    let o = graft(&["data", "inspect", input.to_str().unwrap(), "--rows", "1"]);
    assert!(o.status.success() && stdout(&o).contains("one two three"));

    std::fs::write(
        &input,
        "{\"text\": \"ok\"}\n{not json\n{\"txt\": \"misspelt\"}\n",
    )
    .unwrap();
    let o = graft(&["data", "stats", input.to_str().unwrap()]);
    assert_user_error(&o, &["rows.jsonl:2", "invalid JSON"]);
    // --skip-bad-rows counts and reports them instead.
    let o = graft(&["data", "stats", input.to_str().unwrap(), "--skip-bad-rows"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("skipped 1 bad rows") && stderr(&o).contains("rows.jsonl:2"),
        "{}",
        stderr(&o)
    );
    let cache = dir.path().join("cache");
    let model = fixture("models/llama");
    let o = graft(&[
        "data",
        "tokenize",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        cache.to_str().unwrap(),
    ]);
    assert_user_error(&o, &["rows.jsonl:2"]);
    let o = graft(&[
        "data",
        "--skip-bad-rows",
        "tokenize",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        cache.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("rows.jsonl:3: field `text`"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        graft_data::token_cache::TokenCache::open(&cache)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn inspect_shows_a_recipes_tasks_after_their_preprocessors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("qa.jsonl");
    write(
        &input,
        &[
            json!({"question": "Who wrote Emma?", "answer": "Jane Austen"}),
            json!({"question": "see http://spam.example", "answer": "x"}),
            json!({"question": "Where is Bath?", "answer": "Somerset"}),
        ],
    );
    let recipe = dir.path().join("r.toml");
    let text = |pre: &str| {
        format!(
            "[model]\npath = \"{}\"\n[[data.tasks]]\nname = \"qa\"\ntrain = \"{}\"\npreprocessors = [{pre}]\nfeatures = [\"prompt\", \"completion\"]\n[objective]\nkind = \"sft\"\n",
            fixture("models/t5").display(),
            input.display()
        )
    };
    std::fs::write(
        &recipe,
        text(
            r#"{ kind = "filter_regex", field = "question", pattern = "https?://", drop = true },
                { kind = "format", field = "prompt", template = "Q: {question}\nA:" },
                { kind = "rekey", fields = { prompt = "prompt", completion = "answer" } }"#,
        ),
    )
    .unwrap();
    let o = graft(&[
        "data",
        "inspect",
        "--recipe",
        recipe.to_str().unwrap(),
        "--rows",
        "5",
    ]);
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.contains("filter_regex: kept 2 of 3 rows"), "{out}");
    assert!(
        out.contains(r#""prompt": "Q: Who wrote Emma?\nA:""#),
        "{out}"
    );
    assert!(
        !out.contains("question"),
        "rekey keeps only the output features: {out}"
    );

    // An unknown preprocessor, and a row the template cannot fill, are named.
    std::fs::write(&recipe, text(r#"{ kind = "lowercase" }"#)).unwrap();
    let o = graft(&["data", "inspect", "--recipe", recipe.to_str().unwrap()]);
    assert_user_error(&o, &["preprocessors[0]", "lowercase"]);
    std::fs::write(
        &recipe,
        text(r#"{ kind = "format", field = "prompt", template = "{query}" }"#),
    )
    .unwrap();
    let o = graft(&["data", "inspect", "--recipe", recipe.to_str().unwrap()]);
    assert_user_error(&o, &["qa.jsonl:1", "`query`"]);
}

#[test]
fn zero_counts_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    write(&input, &[json!({"text": "a b c"})]);
    let (i, o, r) = (input.to_str().unwrap(), "out.jsonl", "rep.jsonl");
    for (args, needle) in [
        (
            vec![
                "data", "dedup", "--input", i, "--output", o, "--report", r, "--near", "--ngram",
                "0",
            ],
            "--ngram",
        ),
        (
            vec![
                "data",
                "dedup",
                "--input",
                i,
                "--output",
                o,
                "--report",
                r,
                "--num-perm",
                "0",
            ],
            "--num-perm",
        ),
        (
            vec![
                "data",
                "decontaminate",
                "--input",
                i,
                "--eval",
                i,
                "--output",
                o,
                "--report",
                r,
                "--ngram",
                "0",
            ],
            "--ngram",
        ),
    ] {
        let out = graft(&args);
        assert_user_error(&out, &[needle]);
    }
}

#[test]
fn tokenize_needs_only_the_tokenizer() {
    // A vocabulary-only GGUF (llama.cpp's llama-spm test vocabulary): the ids of llama.cpp's
    // own test vector; and an HF folder holding only its tokenizer files.
    let dir = tempfile::tempdir().unwrap();
    let rows = dir.path().join("rows.jsonl");
    std::fs::write(&rows, "{\"text\": \"ied 4 ½ months\"}\n{\"text\": \"\"}\n").unwrap();
    let out = dir.path().join("ids.jsonl");
    let vocab = fixture("vocab/ggml-vocab-llama-spm.gguf");
    let o = graft(&[
        "tokenize",
        "--model",
        vocab.to_str().unwrap(),
        "--input",
        rows.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--no-special",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        got[0]["input_ids"],
        serde_json::json!([474, 287, 29871, 29946, 29871, 30226, 7378])
    );
    assert_eq!(got[1]["input_ids"], serde_json::json!([]));
    // Decoding gives the text back.
    let text = dir.path().join("text.jsonl");
    let o = graft(&[
        "tokenize",
        "--model",
        vocab.to_str().unwrap(),
        "--input",
        out.to_str().unwrap(),
        "--output",
        text.to_str().unwrap(),
        "--decode",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read_to_string(&text)
        .unwrap()
        .starts_with("{\"text\":\"ied 4 ½ months\"}"));
    // An HF folder with no weights: tokenizer files only.
    let hf = dir.path().join("tok");
    std::fs::create_dir(&hf).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(fixture("models/llama").join(f), hf.join(f)).unwrap();
    }
    let o = graft(&[
        "tokenize",
        "--model",
        hf.to_str().unwrap(),
        "--input",
        rows.to_str().unwrap(),
        "--output",
        dir.path().join("hf.jsonl").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A row without text: exit 2 naming the file, line and field; nothing written.
    std::fs::write(&rows, "{\"text\": \"a\"}\n{\"txt\": \"b\"}\n").unwrap();
    let bad_out = dir.path().join("bad.jsonl");
    let o = graft(&[
        "tokenize",
        "--model",
        vocab.to_str().unwrap(),
        "--input",
        rows.to_str().unwrap(),
        "--output",
        bad_out.to_str().unwrap(),
    ]);
    assert_user_error(&o, &["rows.jsonl:2", "text"]);
    assert!(!bad_out.exists());
}
