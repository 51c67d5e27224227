//! Native versions of the Python hooks (`!function`) of lm-eval's most-run tasks. graft never runs
//! Python from a task file; a hook is replaced only when the task, the key and the function named
//! are exactly those of lm-eval's own file, so a different function is still refused.
//!
//! - hellaswag `process_docs: !function utils.process_docs`: `query` is the preprocessed
//!   `activity_label: ctx_a Ctx_b` (ctx_b capitalised), `choices` the preprocessed endings,
//!   `gold` the label as an integer; preprocessing strips, turns " [title]" into ". ", drops
//!   `[…]` and halves double spaces once.
//! - truthfulqa_mc2 `process_results: !function utils.process_results_mc2`: `acc` = the share of
//!   probability (exp of the choice log-likelihoods, normalised) on the true answers
//!   (`mc2_targets.labels == 1`).
//! - winogrande `doc_to_text` / `doc_to_target` / `doc_to_choice` (`preprocess_winogrande.*`):
//!   lm-eval's multiple inputs — the sentence up to `_` completed by each option is a context,
//!   the rest of the sentence (stripped) the continuation scored after each, `answer` "1"/"2"
//!   the gold.

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    HellaswagDocs,
    TruthfulqaMc2,
    Winogrande,
}

/// The native hook for `task`'s `key: !function function`, if graft has one.
pub fn find(task: &str, key: &str, function: &str) -> Option<Hook> {
    match (task, key, function) {
        ("hellaswag", "process_docs", "utils.process_docs") => Some(Hook::HellaswagDocs),
        ("truthfulqa_mc2", "process_results", "utils.process_results_mc2") => {
            Some(Hook::TruthfulqaMc2)
        }
        ("winogrande", "doc_to_text", "preprocess_winogrande.doc_to_text")
        | ("winogrande", "doc_to_target", "preprocess_winogrande.doc_to_target")
        | ("winogrande", "doc_to_choice", "preprocess_winogrande.doc_to_choice") => {
            Some(Hook::Winogrande)
        }
        _ => None,
    }
}

/// winogrande's (gold, contexts, continuation) of a document.
pub fn winogrande(doc: &Map<String, Value>) -> Result<(usize, Vec<String>, String), String> {
    let field = |k: &str| {
        doc.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("winogrande: field `{k}` missing or not text"))
    };
    let sentence = field("sentence")?;
    let blank = sentence
        .find('_')
        .ok_or("winogrande: the sentence has no `_`")?;
    let gold = match field("answer")? {
        "1" => 0,
        "2" => 1,
        other => {
            return Err(format!(
                "winogrande: answer `{other}` (expected \"1\" or \"2\")"
            ))
        }
    };
    let contexts = vec![
        format!("{}{}", &sentence[..blank], field("option1")?),
        format!("{}{}", &sentence[..blank], field("option2")?),
    ];
    Ok((gold, contexts, sentence[blank + 1..].trim().to_string()))
}

fn hellaswag_clean(text: &str) -> String {
    static BRACKETS: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = BRACKETS.get_or_init(|| regex::Regex::new(r"\[.*?\]").expect("a valid pattern"));
    let t = text.trim().replace(" [title]", ". ");
    re.replace_all(&t, "").replace("  ", " ")
}

/// Python's `str.capitalize()`: the first character upper case, the rest lower case.
fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c
            .to_uppercase()
            .chain(chars.as_str().to_lowercase().chars())
            .collect(),
        None => String::new(),
    }
}

/// hellaswag's `process_docs` on one document (the original fields stay, as `datasets.map` keeps them).
pub fn hellaswag_doc(doc: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    let field = |k: &str| {
        doc.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("hellaswag: field `{k}` missing or not text"))
    };
    let ctx = format!("{} {}", field("ctx_a")?, capitalize(field("ctx_b")?));
    let endings = doc
        .get("endings")
        .and_then(Value::as_array)
        .ok_or("hellaswag: field `endings` missing or not a list")?;
    let label = match doc.get("label") {
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(Value::Number(n)) => n.as_i64(),
        _ => None,
    }
    .ok_or("hellaswag: field `label` is not an integer")?;
    let mut out = doc.clone();
    out.insert(
        "query".into(),
        Value::String(hellaswag_clean(&format!(
            "{}: {ctx}",
            field("activity_label")?
        ))),
    );
    let choices = endings
        .iter()
        .map(|e| e.as_str().map(|s| Value::String(hellaswag_clean(s))))
        .collect::<Option<Vec<_>>>()
        .ok_or("hellaswag: an ending is not text")?;
    out.insert("choices".into(), Value::Array(choices));
    out.insert("gold".into(), Value::from(label));
    Ok(out)
}

/// truthfulqa_mc2's `acc` from the choices' log-likelihoods.
pub fn truthfulqa_mc2(doc: &Map<String, Value>, lls: &[f64]) -> Result<f64, String> {
    let labels = doc
        .get("mc2_targets")
        .and_then(|t| t.get("labels"))
        .and_then(Value::as_array)
        .ok_or("truthfulqa_mc2: field `mc2_targets.labels` missing")?;
    if labels.len() != lls.len() {
        return Err(format!(
            "truthfulqa_mc2: {} labels for {} choices",
            labels.len(),
            lls.len()
        ));
    }
    let probs: Vec<f64> = lls.iter().map(|x| x.exp()).collect();
    let total: f64 = probs.iter().sum();
    Ok(probs
        .iter()
        .zip(labels)
        .filter(|(_, l)| l.as_i64() == Some(1))
        .map(|(p, _)| p / total)
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hellaswag_text_cleaning_as_lm_evals_utils() {
        // Expected values worked out by hand from lm-eval's utils.preprocess.
        assert_eq!(hellaswag_clean("  a [title] b [step] c  d "), "a. b c d");
        assert_eq!(capitalize("tHE cat"), "The cat");
        let doc = json!({"activity_label": "Baking", "ctx_a": "She mixes flour.", "ctx_b": "then SHE",
                         "endings": ["adds eggs [header]", " bakes  it"], "label": "1"});
        let out = hellaswag_doc(doc.as_object().unwrap()).unwrap();
        assert_eq!(out["query"], "Baking: She mixes flour. Then she");
        assert_eq!(out["choices"], json!(["adds eggs ", "bakes it"]));
        assert_eq!(out["gold"], 1);
        assert!(find("hellaswag", "process_docs", "utils.other").is_none());
        let wg = json!({"sentence": "a _ b ", "option1": "x", "option2": "y", "answer": "2"});
        let (gold, ctx, rest) = winogrande(wg.as_object().unwrap()).unwrap();
        assert_eq!(
            (gold, ctx, rest.as_str()),
            (1, vec!["a x".into(), "a y".into()], "b")
        );
        // winogrande's test split has no answers: an error naming the field, not a guess.
        let unlabeled = json!({"sentence": "a _ b", "option1": "x", "option2": "y", "answer": ""});
        assert!(winogrande(unlabeled.as_object().unwrap())
            .unwrap_err()
            .contains("answer"));
    }
}
