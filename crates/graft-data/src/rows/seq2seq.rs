//! Rows for encoder-decoder models: `{"inputs", "targets"}` (or `{"prompt", "completion"}`)
//! rows, each side tokenized with the tokenizer's special tokens (T5 appends EOS), KTO's labelled
//! rows, preference rows `{"prompt", "chosen", "rejected"}` and ranked lists (the prompt is the
//! encoder input of every response). A row's decoder stream is `[decoder_start] + targets`; every
//! target token is a loss token.

use std::path::Path;

use graft_models::Tokenizer;
use serde_json::{Map, Value};

use super::{RowError, RowReader, RowShape, TrainRow};

pub(super) fn text<'a>(
    row: &'a serde_json::Map<String, Value>,
    field: &str,
) -> Option<Result<&'a str, String>> {
    row.get(field).map(|v| {
        v.as_str()
            .ok_or_else(|| format!("field `{field}`: not a string"))
    })
}

pub(super) fn pair_row(inputs: Vec<u32>, targets: &[u32], start: u32) -> TrainRow {
    let mut ids = vec![start];
    ids.extend_from_slice(targets);
    TrainRow {
        encoder_ids: Some(inputs),
        targets: (0..ids.len()).map(|i| i > 0).collect(),
        input_ids: ids,
        ..Default::default()
    }
}

/// Reads and tokenizes the rows of `path` for an encoder-decoder model.
pub fn seq2seq_rows(
    path: &Path,
    tokenizer: &Tokenizer,
    start: u32,
    max_len: usize,
    shape: RowShape,
    reader: &RowReader,
) -> Result<Vec<TrainRow>, RowError> {
    let at = |line: usize, msg: String| RowError::Data(format!("{}:{line}: {msg}", path.display()));
    let enc = Encoder {
        tokenizer,
        start,
        max_len,
    };
    let mut rows: Vec<TrainRow> = Vec::new();
    reader.for_each_row(path, |_, line, obj| {
        let list = shape.lists && obj.contains_key("responses");
        let row = if list {
            enc.list_row(&obj)
        } else if shape.pairs {
            enc.pair_row(&obj, shape.lists)
        } else {
            enc.target_row(&obj, shape.labelled)
        }
        .map_err(|e| at(line, e))?;
        if let (true, Some(first)) = (list, rows.first()) {
            let k = 1 + first.others.len();
            if k != 1 + row.others.len() {
                return Err(at(
                    line,
                    format!(
                        "field `responses`: {} responses, the first row has {k}",
                        1 + row.others.len()
                    ),
                ));
            }
        }
        rows.push(row);
        Ok(())
    })?;
    if rows.is_empty() {
        return Err(RowError::Data(format!("{}: no rows", path.display())));
    }
    Ok(rows)
}

/// Tokenizes one row's sides (each with the tokenizer's special tokens, cut to `max_len`).
struct Encoder<'a> {
    tokenizer: &'a Tokenizer,
    start: u32,
    max_len: usize,
}

impl Encoder<'_> {
    fn encode(&self, s: &str) -> Result<Vec<u32>, String> {
        let mut ids = self.encode_whole(s)?;
        ids.truncate(self.max_len);
        Ok(ids)
    }

    fn encode_whole(&self, s: &str) -> Result<Vec<u32>, String> {
        self.tokenizer.encode(s, true).map_err(|e| e.to_string())
    }

    /// `{"inputs", "targets"}` or `{"prompt", "completion"}` (KTO: and `label`).
    fn target_row(&self, obj: &Map<String, Value>, labelled: bool) -> Result<TrainRow, String> {
        let (inputs, targets) = match (
            text(obj, "inputs"),
            text(obj, "targets"),
            text(obj, "prompt"),
            text(obj, "completion"),
        ) {
            (Some(i), Some(t), _, _) | (_, _, Some(i), Some(t)) => (i?, t?),
            _ => {
                return Err(
                    "seq2seq rows need `inputs` and `targets` (or `prompt` and `completion`)"
                        .into(),
                )
            }
        };
        let inputs = self.encode(inputs)?;
        let targets = self.encode(targets)?;
        if targets.is_empty() {
            return Err("field `targets`: no tokens".into());
        }
        let mut row = pair_row(inputs, &targets, self.start);
        if labelled {
            let label = obj.get("label").and_then(Value::as_bool);
            row.label = Some(label.ok_or("field `label`: missing or not true/false")?);
        }
        Ok(row)
    }

    /// `{"prompt", "chosen", "rejected"}`: the prompt is the encoder input of both; a list of two
    /// (scores 1, 0) for list objectives.
    fn pair_row(&self, obj: &Map<String, Value>, lists: bool) -> Result<TrainRow, String> {
        let field = |f: &str| {
            text(obj, f).ok_or_else(|| {
                format!("field `{f}`: missing (preference rows are {{\"prompt\", \"chosen\", \"rejected\"}} strings)")
            })?
        };
        let prompt = self.encode(field("prompt")?)?;
        let mut chosen = self.encode_whole(field("chosen")?)?;
        let mut rejected = self.encode_whole(field("rejected")?)?;
        if chosen == rejected {
            return Err("fields `chosen` and `rejected`: identical".into());
        }
        chosen.truncate(self.max_len);
        rejected.truncate(self.max_len);
        let mut row = pair_row(prompt.clone(), &chosen, self.start);
        row.others = vec![pair_row(prompt, &rejected, self.start)];
        if lists {
            row.scores = Some(vec![1.0, 0.0]);
        }
        Ok(row)
    }

    /// Ranked lists: the encoder reads the prompt, each response is a decoder stream.
    fn list_row(&self, obj: &Map<String, Value>) -> Result<TrainRow, String> {
        let plain = "encoder-decoder list rows are plain strings";
        let crate::Row::Listwise {
            prompt: crate::Turns::Text(prompt),
            responses,
            scores,
        } = crate::parse_row(obj)?
        else {
            return Err(plain.into());
        };
        let prompt = self.encode(&prompt)?;
        let mut parts = Vec::new();
        for r in responses {
            let crate::Turns::Text(r) = r else {
                return Err(plain.into());
            };
            parts.push(pair_row(prompt.clone(), &self.encode(&r)?, self.start));
        }
        let mut head = parts.remove(0);
        head.others = parts;
        head.scores = Some(scores.iter().map(|&x| x as f32).collect());
        Ok(head)
    }
}
