//! Training rows for encoder-decoder models: `{"inputs", "targets"}` (or `{"prompt",
//! "completion"}`) rows, each side tokenized with the tokenizer's special tokens (T5 appends EOS),
//! or preference rows `{"prompt", "chosen", "rejected"}` (the prompt is the encoder input of both).
//! A row's decoder stream is `[decoder_start] + targets`; every target token is a loss token.
//! And denoising rows for either kind of model: `{"text"}` rows turned into (inputs, targets)
//! pairs by T5 span corruption or UL2's mixture of denoisers — seq2seq rows for T5, the causal-LM
//! form (inputs then targets, loss on the targets, as seqio's PrefixLMFeatureConverter with
//! loss_on_targets_only) for decoders.

use std::path::Path;

use graft_data::span_corruption::{corrupt_document, SpanCorruption};
use graft_data::ul2::{ul2_document, Ul2};
use graft_models::Tokenizer;
use serde_json::Value;

use crate::data::{RowReader, TrainRow};
use crate::mixture::TaskSection;
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
    max_len: usize,
    objective: &dyn crate::objectives::Objective,
    reader: &RowReader,
) -> Result<Vec<TrainRow>, TrainError> {
    let (pairs, labelled) = (objective.pairs(), objective.kl_rows());
    let at =
        |line: usize, msg: String| TrainError::Data(format!("{}:{line}: {msg}", path.display()));
    let encode = |line: usize, s: &str, special: bool| {
        tokenizer
            .encode(s, special)
            .map_err(|e| at(line, e.to_string()))
    };
    let mut rows: Vec<TrainRow> = Vec::new();
    reader.for_each_row(path, |_, line, obj| {
            if objective.lists() && obj.contains_key("responses") {
                // Ranked lists: the encoder reads the prompt, each response is a decoder stream.
                let row = graft_data::parse_row(&obj).map_err(|e| at(line, e))?;
                let graft_data::Row::Listwise { prompt: graft_data::Turns::Text(prompt), responses, scores } = row else {
                    return Err(at(line, "encoder-decoder list rows are plain strings".into()));
                };
                let mut prompt = encode(line, &prompt, true)?;
                prompt.truncate(max_len);
                let mut parts = Vec::new();
                for r in responses {
                    let graft_data::Turns::Text(r) = r else {
                        return Err(at(line, "encoder-decoder list rows are plain strings".into()));
                    };
                    let mut ids = encode(line, &r, true)?;
                    ids.truncate(max_len);
                    parts.push(pair_row(prompt.clone(), &ids, start));
                }
                if let Some(first) = rows.first() {
                    let k = 1 + first.others.len();
                    if k != parts.len() {
                        return Err(at(line, format!("field `responses`: {} responses, the first row has {k}", parts.len())));
                    }
                }
                let mut head = parts.remove(0);
                head.others = parts;
                head.scores = Some(scores.iter().map(|&x| x as f32).collect());
                rows.push(head);
                return Ok(());
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
                row.others = vec![pair_row(prompt, &rejected, start)];
                if objective.lists() {
                    row.scores = Some(vec![1.0, 0.0]);
                }
                rows.push(row);
                return Ok(());
            }
            let (inputs, targets) =
                match (
                    text(&obj, "inputs"),
                    text(&obj, "targets"),
                    text(&obj, "prompt"),
                    text(&obj, "completion"),
                ) {
                    (Some(i), Some(t), _, _) | (_, _, Some(i), Some(t)) => {
                        (i.map_err(|e| at(line, e))?, t.map_err(|e| at(line, e))?)
                    }
                    _ => return Err(at(
                        line,
                        "seq2seq rows need `inputs` and `targets` (or `prompt` and `completion`)"
                            .into(),
                    )),
                };
            let mut inputs = encode(line, inputs, true)?;
            let mut targets = encode(line, targets, true)?;
            if targets.is_empty() {
                return Err(at(line, "field `targets`: no tokens".into()));
            }
            inputs.truncate(max_len);
            targets.truncate(max_len);
            let mut row = pair_row(inputs, &targets, start);
            if labelled {
                let label = obj
                    .get("label")
                    .and_then(Value::as_bool)
                    .ok_or_else(|| at(line, "field `label`: missing or not true/false".into()))?;
                row.label = Some(label);
            }
            rows.push(row);
            Ok(())
    })?;
    if rows.is_empty() {
        return Err(TrainError::Data(format!("{}: no rows", path.display())));
    }
    Ok(rows)
}

/// A denoising pretraining setting (`[data.span_corruption]` or `[data.ul2]`).
pub enum Denoising<'a> {
    Span(&'a SpanCorruption),
    Ul2(&'a Ul2),
}

/// `{"text"}` rows of `path` as denoised rows: seq2seq rows when `start` (the decoder start id)
/// is given, else the causal-LM form. Inputs are at most `max_len` tokens.
pub fn load_denoising_rows(
    path: &Path,
    tokenizer: &Tokenizer,
    eos: u32,
    max_len: usize,
    denoising: &Denoising,
    start: Option<u32>,
    seed: u64,
    reader: &RowReader,
) -> Result<Vec<TrainRow>, TrainError> {
    let at =
        |line: usize, msg: String| TrainError::Data(format!("{}:{line}: {msg}", path.display()));
    let first = first_sentinel(tokenizer).map_err(TrainError::Data)?;
    let ul2 = match denoising {
        Denoising::Ul2(cfg) => {
            let (ds, cum) = cfg
                .resolved()
                .map_err(|e| TrainError::Recipe(format!("data.{e}")))?;
            let modes = ds
                .iter()
                .map(|d| match cfg.mode_tokens {
                    true => tokenizer
                        .encode(d.mode_token(), false)
                        .map_err(|e| TrainError::Data(e.to_string())),
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
        return Err(TrainError::Data(format!("{}: no rows", path.display())));
    }
    Ok(rows)
}

/// The rows of a recipe.
pub struct RecipeRows {
    /// Each task with its training rows (one task, `train`, unless `[[data.tasks]]`).
    pub tasks: Vec<(TaskSection, Vec<TrainRow>)>,
    pub eval: Vec<TrainRow>,
    /// Per task with preprocessors: rows into and out of each one (what the filters dropped).
    pub preprocessing: Vec<(String, Vec<graft_data::preprocess::StepReport>)>,
}

/// The recipe's tasks with their training rows, and every eval row; training rows are read from
/// `data.shard` when set.
pub fn load_recipe_rows(
    recipe: &crate::Recipe,
    source: &graft_models::ModelSource,
    tok: &graft_data::Tokenize,
    objective: &dyn crate::objectives::Objective,
    reader: &RowReader,
) -> Result<RecipeRows, TrainError> {
    let d = &recipe.data;
    let tasks: Vec<TaskSection> = match &d.train {
        Some(train) => vec![TaskSection {
            name: "train".into(),
            train: train.clone(),
            eval: d.eval.clone(),
            rate: None,
            preprocessors: Vec::new(),
            features: None,
        }],
        None => d.tasks.clone(),
    };
    let shard = d.shard.map(|[i, n]| (i, n));
    let mut out = Vec::new();
    let mut evals = Vec::new();
    let mut report = Vec::new();
    for task in tasks {
        let pipeline = || {
            graft_data::preprocess::Pipeline::new(&task.preprocessors, task.features.clone())
                .map_err(|e| TrainError::Recipe(format!("data.tasks `{}`: {e}", task.name)))
        };
        // Training rows come from this process's shard; eval rows are read whole.
        let train_reader = reader.for_task(pipeline()?, shard);
        let eval_reader = reader.for_task(pipeline()?, None);
        let (mut rows, mut eval) = load_files(
            recipe,
            source,
            tok,
            objective,
            &task.train,
            task.eval.as_deref(),
            (&train_reader, &eval_reader),
        )?;
        if !task.preprocessors.is_empty() {
            report.push((task.name.clone(), train_reader.pipeline.report()));
        }
        // Each row (and each of its other responses) knows its task.
        let index = out.len() as u32;
        for r in rows.iter_mut().chain(eval.iter_mut()) {
            r.for_each_part_mut(|p| p.task = Some(index));
        }
        evals.extend(eval);
        out.push((task, rows));
    }
    if d.train.is_none() {
        if let Some(e) = &d.eval {
            let (eval, _) = load_files(recipe, source, tok, objective, e, None, (reader, reader))?;
            evals.extend(eval);
        }
    }
    Ok(RecipeRows {
        tasks: out,
        eval: evals,
        preprocessing: report,
    })
}

/// Train and eval rows of one file pair for `source`'s model: denoising rows when
/// `[data.span_corruption]` or `[data.ul2]` is set, seq2seq rows for T5, token-cache rows for a
/// cache folder, else the decoder rows of `data.rs`.
fn load_files(
    recipe: &crate::Recipe,
    source: &graft_models::ModelSource,
    tok: &graft_data::Tokenize,
    objective: &dyn crate::objectives::Objective,
    train: &Path,
    eval: Option<&Path>,
    (reader, eval_reader): (&RowReader, &RowReader),
) -> Result<(Vec<TrainRow>, Vec<TrainRow>), TrainError> {
    let d = &recipe.data;
    let (pairs, labelled) = (objective.pairs(), objective.kl_rows());
    let t5 = source.t5_config();
    let eos = t5
        .and_then(|c| c.eos_ids().first().copied())
        .or(tok.tokenizer.eos_id)
        .or(source.generation.eos_token_ids.first().copied());
    let denoising = match (&d.span_corruption, &d.ul2) {
        (Some(_), Some(_)) => {
            return Err(TrainError::Recipe(
                "data: give span_corruption or ul2, not both".into(),
            ))
        }
        (Some(s), None) => Some(Denoising::Span(s)),
        (None, Some(u)) => Some(Denoising::Ul2(u)),
        (None, None) => None,
    };
    let both = |load: &dyn Fn(&Path, &RowReader) -> Result<Vec<TrainRow>, TrainError>| {
        let eval = eval
            .map(|p| load(p, eval_reader))
            .transpose()?
            .unwrap_or_default();
        Ok((load(train, reader)?, eval))
    };
    if let Some(den) = denoising {
        if pairs || labelled || d.packing {
            return Err(TrainError::Recipe(format!(
                "data.span_corruption / data.ul2: a sequence objective (lm) without packing, not `{}`",
                objective.name()
            )));
        }
        let eos = eos.ok_or_else(|| TrainError::Recipe("the tokenizer has no EOS token".into()))?;
        let start = t5.map(|c| c.decoder_start_token_id.unwrap_or(0));
        return both(&|p, reader| {
            load_denoising_rows(
                p,
                tok.tokenizer,
                eos,
                d.max_seq_len,
                &den,
                start,
                recipe.train.seed,
                reader,
            )
        });
    }
    if let Some(cfg) = t5 {
        if d.packing {
            return Err(TrainError::Recipe(
                "data.packing: not supported for encoder-decoder models".into(),
            ));
        }
        let start = cfg.decoder_start_token_id.unwrap_or(0);
        return both(&|p, reader| {
            load_seq2seq_rows(p, tok.tokenizer, start, d.max_seq_len, objective, reader)
        });
    }
    let load = |p: &Path, packing: bool, reader: &RowReader| {
        if p.join("cache.json").exists() {
            if pairs || labelled {
                return Err(TrainError::Recipe(format!(
                    "{}: a token cache holds plain text; `{}` needs its own row shapes",
                    p.display(),
                    objective.name()
                )));
            }
            if !reader.pipeline.is_empty() {
                return Err(TrainError::Recipe(format!(
                    "{}: a token cache holds tokens; preprocessors run on rows",
                    p.display()
                )));
            }
            return cache_rows(p, d.max_seq_len, packing, reader.shard);
        }
        crate::data::load_rows(p, tok, objective, packing, reader)
    };
    let eval = eval
        .map(|p| load(p, false, eval_reader))
        .transpose()?
        .unwrap_or_default();
    Ok((load(train, d.packing, reader)?, eval))
}

/// Rows from a token cache (`graft data tokenize`): each document cut into `max_len` windows
/// (every token a target but the first of a window), packed when asked; with a shard (index,
/// count), every count-th document from `index` on.
pub fn cache_rows(
    dir: &Path,
    max_len: usize,
    packing: bool,
    shard: Option<(usize, usize)>,
) -> Result<Vec<TrainRow>, TrainError> {
    let cache = graft_data::token_cache::TokenCache::open(dir).map_err(TrainError::Data)?;
    let (index, count) = shard.unwrap_or((0, 1));
    let mut examples = Vec::new();
    for i in (index..cache.len()).step_by(count) {
        for chunk in cache.document(i).chunks(max_len.max(2)) {
            if chunk.len() > 1 {
                examples.push(graft_data::Example {
                    input_ids: chunk.to_vec(),
                    targets: (0..chunk.len()).map(|j| j > 0).collect(),
                });
            }
        }
    }
    if examples.is_empty() {
        return Err(TrainError::Data(format!(
            "{}: no documents of two or more tokens",
            dir.display()
        )));
    }
    Ok(crate::data::example_rows(examples, packing, max_len))
}
