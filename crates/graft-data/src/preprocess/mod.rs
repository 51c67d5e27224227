//! Task preprocessors, seqio-style: each turns one row into zero (a filter), one or several rows
//! (a formatter), between reading a task's source and tokenizing it. A task declares them in TOML,
//! run in order, then keeps its output `features`:
//!
//! ```toml
//! [[data.tasks]]
//! name = "wtq"
//! train = "data/wtq.jsonl"
//! preprocessors = [
//!   { kind = "linearize_table", field = "table", into = "table_text" },
//!   { kind = "format", field = "inputs", template = "{question} {table_text}" },
//!   { kind = "rekey", fields = { inputs = "inputs", targets = "answer" } },
//! ]
//! features = ["inputs", "targets"]
//! ```
//!
//! Tokenizing (and chat rendering of `messages` rows) is what the loader does with the rows that
//! come out: TRL shapes for decoders, `{"inputs", "targets"}` for encoder-decoders.

mod chat;
mod filter_language;
mod filter_length;
mod filter_regex;
mod format;
mod linearize_table;
mod rationale;
mod rekey;

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

pub type JsonRow = Map<String, Value>;

pub trait Preprocessor: Send + Sync {
    /// The rows `row` becomes: none (filtered out), one, or several.
    fn apply(&self, row: JsonRow) -> Result<Vec<JsonRow>, String>;
}

fn parse<T: DeserializeOwned>(params: Value) -> Result<T, String> {
    serde_json::from_value(params).map_err(|e| e.to_string())
}

/// The registry: `kind` → the preprocessor built from the rest of its table.
fn build(kind: &str, params: Value) -> Result<Box<dyn Preprocessor>, String> {
    Ok(match kind {
        "rekey" => Box::new(parse::<rekey::Rekey>(params)?),
        "format" => Box::new(parse::<format::Format>(params)?),
        "filter_length" => Box::new(parse::<filter_length::FilterLength>(params)?),
        "filter_regex" => Box::new(filter_regex::FilterRegex::new(parse(params)?)?),
        "filter_language" => Box::new(filter_language::FilterLanguage::new(parse(params)?)?),
        "linearize_table" => Box::new(parse::<linearize_table::LinearizeTable>(params)?),
        "rationale" => Box::new(parse::<rationale::Rationale>(params)?),
        "chat" => Box::new(parse::<chat::Chat>(params)?),
        _ => {
            return Err(format!(
                "unknown kind `{kind}` (known: rekey, format, filter_length, filter_regex, filter_language, linearize_table, rationale, chat)"
            ))
        }
    })
}

/// The string in `row[field]`; numbers and booleans are written out as text.
pub(crate) fn text_field(row: &JsonRow, field: &str) -> Result<String, String> {
    match row.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(v.to_string()),
        Some(_) => Err(format!("field `{field}`: not a string")),
        None => Err(format!("field `{field}`: missing")),
    }
}

struct Step {
    kind: String,
    op: Box<dyn Preprocessor>,
    rows_in: AtomicUsize,
    rows_out: AtomicUsize,
}

/// A task's preprocessors in order, then its output features.
#[derive(Default)]
pub struct Pipeline {
    steps: Vec<Step>,
    features: Option<Vec<String>>,
}

/// Rows into and out of one preprocessor, for the drop report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepReport {
    pub kind: String,
    pub rows_in: usize,
    pub rows_out: usize,
}

impl Pipeline {
    /// From TOML tables (`{kind = "...", ...}`); errors name the entry (`preprocessors[i]`).
    pub fn new(specs: &[Value], features: Option<Vec<String>>) -> Result<Self, String> {
        let steps = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let mut params = spec
                    .as_object()
                    .cloned()
                    .ok_or(format!("preprocessors[{i}]: expected a table"))?;
                let kind = match params.remove("kind") {
                    Some(Value::String(k)) => k,
                    _ => return Err(format!("preprocessors[{i}]: missing `kind`")),
                };
                let op = build(&kind, Value::Object(params))
                    .map_err(|e| format!("preprocessors[{i}] ({kind}): {e}"))?;
                Ok(Step {
                    kind,
                    op,
                    rows_in: AtomicUsize::new(0),
                    rows_out: AtomicUsize::new(0),
                })
            })
            .collect::<Result<_, String>>()?;
        if features.as_ref().is_some_and(|f| f.is_empty()) {
            return Err("features: empty".into());
        }
        Ok(Self { steps, features })
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.features.is_none()
    }

    /// The rows `row` becomes; errors name the preprocessor.
    pub fn run(&self, row: JsonRow) -> Result<Vec<JsonRow>, String> {
        let mut rows = vec![row];
        for step in &self.steps {
            step.rows_in.fetch_add(rows.len(), Ordering::Relaxed);
            let mut next = Vec::with_capacity(rows.len());
            for r in rows {
                next.extend(
                    step.op
                        .apply(r)
                        .map_err(|e| format!("preprocessor `{}`: {e}", step.kind))?,
                );
            }
            step.rows_out.fetch_add(next.len(), Ordering::Relaxed);
            rows = next;
        }
        let Some(features) = &self.features else {
            return Ok(rows);
        };
        rows.into_iter()
            .map(|mut r| {
                features
                    .iter()
                    .map(|f| {
                        r.remove_entry(f).ok_or_else(|| {
                            let have: Vec<&String> = r.keys().collect();
                            format!("output feature `{f}`: missing (the row has {have:?})")
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// Rows in and out of each preprocessor so far.
    pub fn report(&self) -> Vec<StepReport> {
        self.steps
            .iter()
            .map(|s| StepReport {
                kind: s.kind.clone(),
                rows_in: s.rows_in.load(Ordering::Relaxed),
                rows_out: s.rows_out.load(Ordering::Relaxed),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn row(v: Value) -> JsonRow {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn pipeline_runs_in_order_counts_and_keeps_features() {
        let p = Pipeline::new(
            &[
                json!({"kind": "filter_length", "field": "q", "min_words": 2}),
                json!({"kind": "format", "field": "prompt", "template": "Q: {q}\nA:"}),
                json!({"kind": "rekey", "fields": {"prompt": "prompt", "completion": "a"}}),
            ],
            Some(vec!["prompt".into(), "completion".into()]),
        )
        .unwrap();
        assert!(p
            .run(row(json!({"q": "short", "a": "x"})))
            .unwrap()
            .is_empty());
        let out = p
            .run(row(json!({"q": "two words", "a": "yes", "extra": 1})))
            .unwrap();
        assert_eq!(
            out,
            vec![row(
                json!({"prompt": "Q: two words\nA:", "completion": "yes"})
            )]
        );
        let r = p.report();
        assert_eq!((r[0].rows_in, r[0].rows_out), (2, 1));
        assert_eq!((r[2].rows_in, r[2].rows_out), (1, 1));
    }

    #[test]
    fn bad_specs_and_rows_are_named() {
        let e = Pipeline::new(&[json!({"kind": "nope"})], None)
            .err()
            .unwrap();
        assert!(e.contains("preprocessors[0]") && e.contains("nope"), "{e}");
        let e = Pipeline::new(&[json!({"kind": "rekey", "felds": {}})], None)
            .err()
            .unwrap();
        assert!(e.contains("felds"), "{e}");
        let e = Pipeline::new(&[json!({"field": "x"})], None).err().unwrap();
        assert!(e.contains("kind"), "{e}");
        let p = Pipeline::new(
            &[json!({"kind": "format", "field": "p", "template": "{q}"})],
            Some(vec!["p".into(), "c".into()]),
        )
        .unwrap();
        let e = p.run(row(json!({"x": 1}))).unwrap_err();
        assert!(e.contains("format") && e.contains("`q`"), "{e}");
        let e = p.run(row(json!({"q": "a"}))).unwrap_err();
        assert!(e.contains("output feature `c`"), "{e}");
    }
}
