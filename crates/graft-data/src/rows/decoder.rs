//! Decoder rows from TRL's row shapes: `{"text"}`, `{"prompt", "completion"}`, `{"messages"}`
//! (chat template, assistant tokens as targets), preference pairs, ranked lists and KTO's labelled
//! rows; plain rows optionally packed into `max_len` rows.

use std::path::Path;

use crate::{pack, parse_row, Example, Tokenize};

use super::{RowError, RowReader, RowShape, TrainRow};

/// Reads and tokenizes every row of `path` (JSONL or Parquet; a malformed row is an error naming
/// file and line). The shape says which rows the objective takes: every token a target (lm) or
/// completions only, preference pairs, ranked lists, or KTO's labelled rows.
pub fn decoder_rows(
    path: &Path,
    tok: &Tokenize,
    shape: RowShape,
    packing: bool,
    reader: &RowReader,
) -> Result<Vec<TrainRow>, RowError> {
    let at = |line: usize, msg: String| RowError::Data(format!("{}:{line}: {msg}", path.display()));
    let mut rows: Vec<TrainRow> = Vec::new();
    reader.for_each_row(path, |_, n, obj| {
        let row = parse_row(&obj).map_err(|e| at(n, e))?;
        let label = obj.get("label").and_then(|v| v.as_bool());
        let out = decoder_row(&row, label, tok, shape).map_err(|e| at(n, e))?;
        if let (true, Some(first)) = (shape.lists, rows.first()) {
            if first.others.len() != out.others.len() {
                return Err(at(n, format!(
                    "field `responses`: {} responses, the first row has {} (lists of one length, so batches stack)",
                    out.others.len() + 1,
                    first.others.len() + 1
                )));
            }
        }
        rows.push(out);
        Ok(())
    })?;
    if rows.is_empty() {
        return Err(RowError::Data(format!("{}: no rows", path.display())));
    }
    if shape.lists || shape.labelled || shape.pairs {
        return Ok(rows);
    }
    let examples = rows
        .into_iter()
        .map(|r| Example {
            input_ids: r.input_ids,
            targets: r.targets,
        })
        .collect();
    Ok(example_rows(examples, packing, tok.max_len))
}

/// One row in the shape the objective takes.
fn decoder_row(
    row: &crate::Row,
    label: Option<bool>,
    tok: &Tokenize,
    shape: RowShape,
) -> Result<TrainRow, String> {
    let plain = |e: Example| TrainRow {
        input_ids: e.input_ids,
        targets: e.targets,
        ..Default::default()
    };
    if shape.lists {
        let (responses, scores) = tok.listwise(row)?;
        let mut parts = responses.into_iter().map(plain);
        let mut head = parts.next().ok_or("field `responses`: empty")?;
        head.others = parts.collect();
        head.scores = Some(scores.iter().map(|&x| x as f32).collect());
        return Ok(head);
    }
    if shape.labelled {
        if !matches!(row, crate::Row::PromptCompletion { .. }) {
            return Err("this objective needs {\"prompt\", \"completion\", \"label\"} rows".into());
        }
        let label = label.ok_or("field `label`: missing or not true/false")?;
        return Ok(TrainRow {
            label: Some(label),
            ..plain(tok.example(row)?)
        });
    }
    if shape.pairs {
        let (chosen, rejected) = tok.preference(row)?;
        return Ok(TrainRow {
            others: vec![plain(rejected)],
            ..plain(chosen)
        });
    }
    let mut ex = tok.example(row)?;
    if !shape.completion_only {
        ex.targets = (0..ex.input_ids.len()).map(|i| i > 0).collect();
    }
    Ok(plain(ex))
}

/// Training rows from tokenized examples: one per example, or packed `max_len` rows.
pub fn example_rows(examples: Vec<Example>, packing: bool, max_len: usize) -> Vec<TrainRow> {
    if packing {
        pack(&examples, max_len)
            .into_iter()
            .map(|r| TrainRow {
                input_ids: r.input_ids,
                targets: r.targets,
                packed: Some((r.positions, r.segments)),
                ..Default::default()
            })
            .collect()
    } else {
        examples
            .into_iter()
            .map(|e| TrainRow {
                input_ids: e.input_ids,
                targets: e.targets,
                ..Default::default()
            })
            .collect()
    }
}
