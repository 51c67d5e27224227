//! N-gram decontamination as Tulu 3 ran it (allenai/open-instruct `decontamination/search.py`,
//! n = 8, threshold 0.5): an eval instance's token is matched by a training message when some
//! n-token window of the eval instance containing it occurs (as a phrase) in the message; the
//! score is matched tokens / eval tokens, against one message at a time — for chat rows only the
//! user turns, as open-instruct indexes them — and the row's score is the max over its messages.
//! Rows scoring more than the threshold (strictly) against any eval instance are removed. As in
//! open-instruct, an eval instance shorter than n never matches, and of several windows with the
//! same text only the last one counts.
//!
//! Approximation: open-instruct tokenizes eval text with spaCy (punctuation, `n't`, hyphens and
//! whitespace runs are tokens) and matches with Elasticsearch's standard analyzer; graft uses
//! lower-cased alphanumeric words on both sides, so scores differ where punctuation is dense.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

/// Every string inside a JSON value, joined by newlines: what a row "says".
pub fn row_text(v: &Value) -> String {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out.join("\n")
}

/// The content of a row for counting and dedup: the strings of its TRL content fields (`text`,
/// `prompt`, `completion`, `chosen`, `rejected`, `messages`, `inputs`, `targets`; message lists by
/// their `content`), else every string in it — never metadata like ids or language tags.
pub fn content_text(row: &Value) -> String {
    const FIELDS: [&str; 8] = [
        "text",
        "prompt",
        "completion",
        "chosen",
        "rejected",
        "messages",
        "inputs",
        "targets",
    ];
    fn content(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| content(x, out)),
            Value::Object(o) => match o.get("content") {
                Some(c) => content(c, out),
                None => o.values().for_each(|x| content(x, out)),
            },
            _ => {}
        }
    }
    let mut out = Vec::new();
    for f in FIELDS {
        if let Some(v) = row.get(f) {
            content(v, &mut out);
        }
    }
    if out.is_empty() {
        return row_text(row);
    }
    out.join("\n")
}

/// Lower-cased alphanumeric words.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn gram_key(words: &[String]) -> String {
    words.join(" ")
}

/// What a training row offers for matching: the user turns of `messages` (or of a
/// conversational `prompt`), else `prompt`, `text` or `inputs`, else every string in the row.
pub fn train_units(row: &Value) -> Vec<String> {
    let user_turns = |v: &Value| -> Option<Vec<String>> {
        let turns = v.as_array()?;
        Some(
            turns
                .iter()
                .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                .filter_map(|m| m.get("content").and_then(Value::as_str).map(str::to_string))
                .collect(),
        )
    };
    if let Some(u) = row.get("messages").and_then(user_turns) {
        return u;
    }
    for field in ["prompt", "text", "inputs"] {
        match row.get(field) {
            Some(Value::String(s)) => return vec![s.clone()],
            Some(v @ Value::Array(_)) => return user_turns(v).unwrap_or_default(),
            _ => {}
        }
    }
    vec![row_text(row)]
}

/// The eval side, indexed by n-gram.
pub struct EvalIndex {
    n: usize,
    /// Per eval instance: its token count and the windows that count (text → start), the last of
    /// equal windows kept.
    evals: Vec<(usize, HashMap<String, usize>)>,
    /// Window text → eval instances holding it.
    index: HashMap<String, Vec<usize>>,
}

/// One overlap found: eval instance `eval`, the share of its tokens matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlap {
    pub eval: usize,
    pub ratio: f64,
}

impl EvalIndex {
    pub fn new(eval_texts: &[String], n: usize) -> Self {
        let n = n.max(1);
        let mut evals = Vec::with_capacity(eval_texts.len());
        let mut index: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, t) in eval_texts.iter().enumerate() {
            let w = words(t);
            let mut windows: HashMap<String, usize> = HashMap::new();
            if w.len() >= n {
                for (start, g) in w.windows(n).enumerate() {
                    windows.insert(gram_key(g), start);
                }
            }
            for key in windows.keys() {
                index.entry(key.clone()).or_default().push(i);
            }
            evals.push((w.len(), windows));
        }
        Self { n, evals, index }
    }

    /// Score of each eval instance against one training message, for instances sharing a window.
    fn scores(&self, message: &str) -> HashMap<usize, f64> {
        let w = words(message);
        let mut grams: HashSet<String> = HashSet::new();
        let mut candidates: HashSet<usize> = HashSet::new();
        if w.len() >= self.n {
            for g in w.windows(self.n) {
                let key = gram_key(g);
                if let Some(hits) = self.index.get(&key) {
                    candidates.extend(hits);
                    grams.insert(key);
                }
            }
        }
        candidates
            .into_iter()
            .map(|i| {
                let (len, windows) = &self.evals[i];
                let mut matched = vec![false; *len];
                for (key, &start) in windows {
                    if grams.contains(key) {
                        matched[start..start + self.n]
                            .iter_mut()
                            .for_each(|m| *m = true);
                    }
                }
                (
                    i,
                    matched.iter().filter(|&&m| m).count() as f64 / (*len).max(1) as f64,
                )
            })
            .collect()
    }

    /// The eval instances a training row overlaps by more than `threshold` (its best message's
    /// score), most overlapped first.
    pub fn overlaps(&self, units: &[String], threshold: f64) -> Vec<Overlap> {
        let mut best: HashMap<usize, f64> = HashMap::new();
        for u in units {
            for (i, s) in self.scores(u) {
                let e = best.entry(i).or_insert(0.0);
                *e = e.max(s);
            }
        }
        let mut out: Vec<Overlap> = best
            .into_iter()
            .filter(|&(_, r)| r > threshold)
            .map(|(eval, ratio)| Overlap { eval, ratio })
            .collect();
        out.sort_by(|a, b| b.ratio.total_cmp(&a.ratio).then(a.eval.cmp(&b.eval)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_turns_are_what_chat_rows_offer() {
        let row = serde_json::json!({"messages": [{"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A"}, {"role": "user", "content": "Q2"}]});
        assert_eq!(train_units(&row), ["Q1", "Q2"]);
        assert_eq!(
            train_units(&serde_json::json!({"prompt": "P", "completion": "C"})),
            ["P"]
        );
    }

    #[test]
    fn row_text_collects_every_string() {
        let row = serde_json::json!({"messages": [{"role": "user", "content": "Hi"}], "n": 3});
        assert_eq!(row_text(&row), "Hi\nuser");
        assert_eq!(content_text(&row), "Hi");
        assert_eq!(
            content_text(&serde_json::json!({"text": "a b", "lang": "en"})),
            "a b"
        );
    }
}
