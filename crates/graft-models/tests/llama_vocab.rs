//! llama.cpp's tokenizer conformance suite (`tests/test-tokenizer-0.cpp`): each vocabulary-only
//! GGUF with its `.inp` strings (separated by `\n__ggml_vocab_test__\n`) and `.out` token ids,
//! encoded as llama.cpp's test does (no special tokens added, special-token text not parsed).
//! CI runs the committed subset in tests/fixtures/vocab (llama-spm, bert-bge; MIT, from the llama.cpp
//! vendored in llama-cpp-python's sdist); `GRAFT_VOCAB_DIR` points at the whole suite
//! (tools/fixtures/fetch_real_models.sh) and prints the per-vocabulary table.

use std::path::{Path, PathBuf};

use graft_testkit::fixture;

/// (cases equal, cases, the first mismatch) for one vocabulary.
fn conformance(gguf: &Path) -> Result<(usize, usize, Option<String>), String> {
    let read = |ext: &str| {
        std::fs::read_to_string(format!("{}.{ext}", gguf.display())).map_err(|e| e.to_string())
    };
    let (inp, out) = (read("inp")?, read("out")?);
    // As llama.cpp reads them: the text after the last separator is a case only if not empty.
    let mut inputs: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    if inputs.last() == Some(&"") {
        inputs.pop();
    }
    let outputs: Vec<&str> = out.lines().collect();
    if inputs.len() != outputs.len() {
        return Err(format!(
            "{} inputs, {} outputs",
            inputs.len(),
            outputs.len()
        ));
    }
    let (mut tok, _) = graft_models::open_tokenizer(gguf).map_err(|e| e.to_string())?;
    // For the developer check with transformers (tools/fixtures/xcheck_vocab_tokenizers.py):
    // the tokenizer.json graft writes for this vocabulary.
    if let Some(dir) = std::env::var_os("GRAFT_VOCAB_EXPORT") {
        let name = gguf.file_stem().unwrap().to_string_lossy().to_string();
        let out = Path::new(&dir).join(format!("{name}.tokenizer.json"));
        tok.inner.save(&out, false).map_err(|e| e.to_string())?;
    }
    tok.inner.set_encode_special_tokens(true);
    let (mut equal, mut first) = (0, None);
    for (text, want) in inputs.iter().zip(&outputs) {
        let want: Vec<u32> = want
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let got = tok
            .inner
            .encode(*text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| e.to_string())?;
        if got == want {
            equal += 1;
        } else if first.is_none() {
            first = Some(format!("{text:?}: graft {got:?}, llama.cpp {want:?}"));
        }
    }
    Ok((equal, inputs.len(), first))
}

#[test]
fn llama_spm_vocabulary_gives_llama_cpps_ids() {
    let (equal, total, first) = conformance(&fixture("vocab/ggml-vocab-llama-spm.gguf")).unwrap();
    assert_eq!(equal, total, "{first:?}");
}

/// WordPiece (`tokenizer.ggml.model` `bert`): pieces renamed back from llama.cpp's phantom-space
/// form, uncased BERT normalisation and pre-tokenization.
#[test]
fn bert_bge_vocabulary_gives_llama_cpps_ids() {
    let path = fixture("vocab/ggml-vocab-bert-bge.gguf");
    let (equal, total, first) = conformance(&path).unwrap();
    assert_eq!(equal, total, "{first:?}");
    // With special tokens, as BertTokenizerFast: [CLS] text [SEP]; decoding joins the pieces.
    let (tok, _) = graft_models::open_tokenizer(&path).unwrap();
    let ids = tok.encode("Hello world", true).unwrap();
    assert_eq!(ids, vec![101, 7592, 2088, 102]);
    assert_eq!(tok.decode(&ids, true).unwrap(), "hello world");
}

#[test]
fn the_whole_suite_when_present() {
    let Some(dir) = std::env::var_os("GRAFT_VOCAB_DIR").map(PathBuf::from) else {
        eprintln!("skipped: set GRAFT_VOCAB_DIR to llama.cpp's vocab files");
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .filter(|p| Path::new(&format!("{}.inp", p.display())).exists())
        .collect();
    files.sort();
    println!("| vocabulary | equal / cases | first mismatch |\n|---|---:|---|");
    for f in files {
        let name = f
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .replace("ggml-vocab-", "");
        match conformance(&f) {
            Ok((e, t, first)) => println!(
                "| {name} | {e} / {t} | {} |",
                first
                    .unwrap_or_default()
                    .replace('|', "\\|")
                    .chars()
                    .take(160)
                    .collect::<String>()
            ),
            Err(e) => println!("| {name} | error | {} |", e.replace('|', "\\|")),
        }
    }
}
