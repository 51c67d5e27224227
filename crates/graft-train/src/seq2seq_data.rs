//! Training rows for encoder-decoder models: `{"inputs", "targets"}` (or `{"prompt",
//! "completion"}`) rows, each side tokenized with the tokenizer's special tokens (T5 appends EOS),
//! or `{"text"}` rows turned into span-corruption pairs (`[data.span_corruption]`), or preference
//! rows `{"prompt", "chosen", "rejected"}` (the prompt is the encoder input of both). A row's
//! decoder stream is `[decoder_start] + targets`; every target token is a loss token.

use std::path::Path;

use graft_data::span_corruption::{corrupt_document, SpanCorruption};
use graft_models::Tokenizer;
use serde_json::Value;

use crate::data::TrainRow;
use crate::TrainError;

fn text<'a>(
    row: &'a serde_json::Map<String, Value>,
    field: &str,
) -> Option<Result<&'a str, String>> {
    row.get(field).map(|v| {
        v.as_str()
            .ok_or_else(|| format!("field `{field}`: not a string"))
    })
}

fn pair_row(inputs: Vec<u32>, targets: &[u32], start: u32) -> TrainRow {
    let mut ids = vec![start];
    ids.extend_from_slice(targets);
    TrainRow {
        encoder_ids: Some(inputs),
        targets: (0..ids.len()).map(|i| i > 0).collect(),
        input_ids: ids,
        ..Default::default()
    }
}

/// The id of `<extra_id_0>`, checking that `<extra_id_k>` counts down from it as T5 numbers them.
fn first_sentinel(tokenizer: &Tokenizer) -> Result<u32, String> {
    let id = |k: u32| tokenizer.inner.token_to_id(&format!("<extra_id_{k}>"));
    let first = id(0).ok_or_else(|| {
        format!(
            "{}: span corruption needs sentinel tokens (<extra_id_0>, <extra_id_1>, …) and the tokenizer has none",
            tokenizer.source.display()
        )
    })?;
    if let Some(second) = id(1) {
        if second + 1 != first {
            return Err(format!(
                "{}: <extra_id_1> is {second}, expected {} (one below <extra_id_0>)",
                tokenizer.source.display(),
                first - 1
            ));
        }
    }
    Ok(first)
}

/// Reads and tokenizes the rows of `path` for an encoder-decoder model.
pub fn load_seq2seq_rows(
    path: &Path,
    tokenizer: &Tokenizer,
    start: u32,
    eos: u32,
    max_len: usize,
    span: Option<&SpanCorruption>,
    pairs: bool,
    seed: u64,
) -> Result<Vec<TrainRow>, TrainError> {
    let at =
        |line: usize, msg: String| TrainError::Data(format!("{}:{line}: {msg}", path.display()));
    let sentinel = span
        .map(|_| first_sentinel(tokenizer))
        .transpose()
        .map_err(TrainError::Data)?;
    let encode = |line: usize, s: &str, special: bool| {
        tokenizer
            .encode(s, special)
            .map_err(|e| at(line, e.to_string()))
    };
    let mut rows = Vec::new();
    for (doc, (line, obj)) in graft_data::source::read_rows(path)
        .map_err(TrainError::Data)?
        .into_iter()
        .enumerate()
    {
        if let (Some(cfg), Some(first)) = (span, sentinel) {
            let t = text(&obj, "text")
                .ok_or_else(|| at(line, "span corruption needs {\"text\"} rows".into()))?
                .map_err(|e| at(line, e))?;
            let tokens = encode(line, t, false)?;
            for (inputs, targets) in
                corrupt_document(&tokens, max_len, cfg, first, eos, seed, doc as u64)
            {
                rows.push(pair_row(inputs, &targets, start));
            }
            continue;
        }
        if pairs {
            let field = |f: &str| {
                text(&obj, f)
                    .ok_or_else(|| at(line, format!("field `{f}`: missing (preference rows are {{\"prompt\", \"chosen\", \"rejected\"}} strings)")))?
                    .map_err(|e| at(line, e))
            };
            let mut prompt = encode(line, field("prompt")?, true)?;
            let mut chosen = encode(line, field("chosen")?, true)?;
            let mut rejected = encode(line, field("rejected")?, true)?;
            if chosen == rejected {
                return Err(at(line, "fields `chosen` and `rejected`: identical".into()));
            }
            prompt.truncate(max_len);
            chosen.truncate(max_len);
            rejected.truncate(max_len);
            let mut row = pair_row(prompt.clone(), &chosen, start);
            row.rejected = Some(Box::new(pair_row(prompt, &rejected, start)));
            rows.push(row);
            continue;
        }
        let (inputs, targets) = match (
            text(&obj, "inputs"),
            text(&obj, "targets"),
            text(&obj, "prompt"),
            text(&obj, "completion"),
        ) {
            (Some(i), Some(t), _, _) | (_, _, Some(i), Some(t)) => {
                (i.map_err(|e| at(line, e))?, t.map_err(|e| at(line, e))?)
            }
            _ => {
                return Err(at(
                    line,
                    "seq2seq rows need `inputs` and `targets` (or `prompt` and `completion`)"
                        .into(),
                ))
            }
        };
        let mut inputs = encode(line, inputs, true)?;
        let mut targets = encode(line, targets, true)?;
        if targets.is_empty() {
            return Err(at(line, "field `targets`: no tokens".into()));
        }
        inputs.truncate(max_len);
        targets.truncate(max_len);
        rows.push(pair_row(inputs, &targets, start));
    }
    if rows.is_empty() {
        return Err(TrainError::Data(format!("{}: no rows", path.display())));
    }
    Ok(rows)
}
