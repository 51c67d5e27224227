//! Denoising rows for either kind of model: `{"text"}` rows turned into (inputs, targets) pairs
//! by T5 span corruption or UL2's mixture of denoisers — seq2seq rows for T5, the causal-LM form
//! (inputs then targets, loss on the targets, as seqio's PrefixLMFeatureConverter with
//! loss_on_targets_only) for decoders.

use std::path::Path;

use graft_models::Tokenizer;

use super::seq2seq::{pair_row, text};
use super::{RowError, RowReader, TrainRow};
use crate::span_corruption::{corrupt_document, SpanCorruption};
use crate::ul2::{ul2_document, Ul2};

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

/// A denoising pretraining setting (`[data.span_corruption]` or `[data.ul2]`).
pub enum Denoising<'a> {
    Span(&'a SpanCorruption),
    Ul2(&'a Ul2),
}

/// `{"text"}` rows of `path` as denoised rows: seq2seq rows when `start` (the decoder start id)
/// is given, else the causal-LM form. Inputs are at most `max_len` tokens.
pub fn denoising_rows(
    path: &Path,
    tokenizer: &Tokenizer,
    eos: u32,
    max_len: usize,
    denoising: &Denoising,
    start: Option<u32>,
    seed: u64,
    reader: &RowReader,
) -> Result<Vec<TrainRow>, RowError> {
    let at = |line: usize, msg: String| RowError::Data(format!("{}:{line}: {msg}", path.display()));
    let first = first_sentinel(tokenizer).map_err(RowError::Data)?;
    let ul2 = match denoising {
        Denoising::Ul2(cfg) => {
            let (ds, cum) = cfg
                .resolved()
                .map_err(|e| RowError::Recipe(format!("data.{e}")))?;
            let modes = ds
                .iter()
                .map(|d| match cfg.mode_tokens {
                    true => tokenizer
                        .encode(d.mode_token(), false)
                        .map_err(|e| RowError::Data(e.to_string())),
                    false => Ok(Vec::new()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Some((ds, cum, modes))
        }
        Denoising::Span(_) => None,
    };
    let mut rows = Vec::new();
    reader.for_each_row(path, |doc, line, obj| {
        let t = text(&obj, "text")
            .ok_or_else(|| at(line, "denoising objectives need {\"text\"} rows".into()))?
            .map_err(|e| at(line, e))?;
        let tokens = tokenizer
            .encode(t, false)
            .map_err(|e| at(line, e.to_string()))?;
        let pairs = match (denoising, &ul2) {
            (Denoising::Span(cfg), _) => {
                corrupt_document(&tokens, max_len, cfg, first, eos, seed, doc as u64)
            }
            (Denoising::Ul2(_), Some((ds, cum, modes))) => ul2_document(
                &tokens, max_len, ds, cum, modes, first, eos, seed, doc as u64,
            ),
            (Denoising::Ul2(_), None) => unreachable!("resolved above"),
        };
        for (inputs, targets) in pairs {
            rows.push(match start {
                Some(start) => pair_row(inputs, &targets, start),
                None => TrainRow {
                    targets: (0..inputs.len() + targets.len())
                        .map(|i| i >= inputs.len())
                        .collect(),
                    input_ids: inputs.into_iter().chain(targets).collect(),
                    ..Default::default()
                },
            });
        }
        Ok(())
    })?;
    if rows.is_empty() {
        return Err(RowError::Data(format!("{}: no rows", path.display())));
    }
    Ok(rows)
}
