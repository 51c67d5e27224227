//! Training rows: a recipe's `[data]` section (section.rs) becomes tokenized rows here, in one
//! entry point ([`load_section`]) — each task's files read (sharded, preprocessed), and turned into
//! the rows the model and the objective need. The row kinds, one file each: decoder rows from
//! TRL's shapes (decoder.rs: text, prompt/completion, messages, preference pairs, ranked lists,
//! KTO's labelled rows; packing), seq2seq rows (seq2seq.rs), denoising rows from `{"text"}` (T5
//! span corruption, UL2; denoising.rs) and token-cache rows (cached.rs). graft-train batches them.

pub mod cached;
pub mod decoder;
pub mod denoising;
pub mod section;
pub mod seq2seq;

use std::path::Path;

pub use section::{DataSection, MixtureSection, SwitchSection, TaskSection};

/// Why rows could not be built: a setting of the recipe, or the data itself.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RowError {
    #[error("{0}")]
    Recipe(String),
    #[error("{0}")]
    Data(String),
}

/// The rows an objective takes; `objective` names it in errors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowShape {
    pub objective: &'static str,
    /// Only completion/assistant tokens are targets (SFT), else every token (LM).
    pub completion_only: bool,
    /// Preference pairs `{"prompt", "chosen", "rejected"}`.
    pub pairs: bool,
    /// Ranked lists `{"prompt", "responses", "scores"}` (pairs become lists of two).
    pub lists: bool,
    /// KTO's labelled rows `{"prompt", "completion", "label"}`.
    pub labelled: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrainRow {
    pub input_ids: Vec<u32>,
    pub targets: Vec<bool>,
    /// Set for packed rows (position resets and segment ids per document).
    pub packed: Option<(Vec<u32>, Vec<u32>)>,
    /// For preference pairs and lists: the other responses to the same prompt — the rejected
    /// one of a pair; this row is the first (the chosen one).
    pub others: Vec<TrainRow>,
    /// For lists: the label ψ of each response (this row's first, then its others'), higher is
    /// better.
    pub scores: Option<Vec<f32>>,
    /// KTO's label (true = desirable); such batches get KL rows appended by [`collate`].
    pub label: Option<bool>,
    /// The frozen reference's next-token log-probs (T−1), cached once before training so the
    /// reference model need not stay in memory.
    pub ref_logps: Option<Vec<f32>>,
    /// Encoder-decoder rows: the encoder input (then `input_ids` is the decoder stream
    /// `[decoder_start] + targets`).
    pub encoder_ids: Option<Vec<u32>>,
    /// The index of the row's `[[data.tasks]]` entry (MTLoRA selects its task-specific update
    /// by it).
    pub task: Option<u32>,
}

impl TrainRow {
    /// This row, then its other responses.
    pub fn parts(&self) -> impl Iterator<Item = &TrainRow> {
        std::iter::once(self).chain(&self.others)
    }

    /// Calls `f` on this row, then on each of its other responses.
    pub fn for_each_part_mut(&mut self, mut f: impl FnMut(&mut TrainRow)) {
        f(self);
        for o in &mut self.others {
            f(o);
        }
    }
}

/// How a task's rows are read: its shard of the source, its preprocessors, and what happens to
/// rows that do not parse or tokenize — they stop the read, or (`skip`) are recorded and passed
/// over. Errors are shared by every task of a run.
#[derive(Clone, Default)]
pub struct RowReader {
    pub skip: bool,
    pub errors: std::rc::Rc<std::cell::RefCell<Vec<String>>>,
    pub pipeline: std::rc::Rc<crate::preprocess::Pipeline>,
    /// (index, count): this process reads every count-th source row from row `index` on.
    pub shard: Option<(usize, usize)>,
}

impl RowReader {
    pub fn new(skip: bool) -> Self {
        Self {
            skip,
            ..Default::default()
        }
    }

    /// The same reader (sharing its errors) for a task with these preprocessors and shard.
    pub fn for_task(
        &self,
        pipeline: crate::preprocess::Pipeline,
        shard: Option<(usize, usize)>,
    ) -> Self {
        Self {
            skip: self.skip,
            errors: self.errors.clone(),
            pipeline: std::rc::Rc::new(pipeline),
            shard,
        }
    }

    /// Calls `f(index, line, row)` for every row of `path` (of this reader's shard, after its
    /// preprocessors; `index` counts the rows `f` sees); rows that fail to parse, to preprocess,
    /// or for which `f` fails, stop the read — or, when skipping, are recorded and passed over.
    pub fn for_each_row(
        &self,
        path: &Path,
        mut f: impl FnMut(
            usize,
            usize,
            serde_json::Map<String, serde_json::Value>,
        ) -> Result<(), RowError>,
    ) -> Result<(), RowError> {
        let (index, count) = self.shard.unwrap_or((0, 1));
        let mut seen = 0;
        for (i, item) in crate::source::rows_iter(path)
            .map_err(RowError::Data)?
            .enumerate()
        {
            if i % count != index {
                continue;
            }
            let rows = item.map_err(RowError::Data).and_then(|(line, obj)| {
                let rows = match self.pipeline.is_empty() {
                    true => vec![obj],
                    false => self
                        .pipeline
                        .run(obj)
                        .map_err(|e| RowError::Data(format!("{}:{line}: {e}", path.display())))?,
                };
                Ok((line, rows))
            });
            let (line, rows) = match rows {
                Ok(r) => r,
                Err(e) => {
                    self.handle(Err(e))?;
                    continue;
                }
            };
            for obj in rows {
                self.handle(f(seen, line, obj))?;
                seen += 1;
            }
        }
        Ok(())
    }

    /// Passes `result` through, or records its error when skipping.
    pub fn handle(&self, result: Result<(), RowError>) -> Result<(), RowError> {
        match result {
            Err(e) if self.skip => {
                self.errors.borrow_mut().push(e.to_string());
                Ok(())
            }
            other => other,
        }
    }

    pub fn count(&self) -> usize {
        self.errors.borrow().len()
    }
}

/// A recipe's rows: each task with its training rows, and every eval row.
pub struct SectionRows {
    /// Each task with its training rows (one task, `train`, unless `[[data.tasks]]`).
    pub tasks: Vec<(TaskSection, Vec<TrainRow>)>,
    pub eval: Vec<TrainRow>,
    /// Per task with preprocessors: rows into and out of each one (what the filters dropped).
    pub preprocessing: Vec<(String, Vec<crate::preprocess::StepReport>)>,
}

/// The model side of row building: its tokenizer (and chat template), and for encoder-decoder
/// models the decoder start token; the EOS id denoising appends.
pub struct RowModel<'a> {
    pub tok: &'a crate::Tokenize<'a>,
    /// Seq2seq: the decoder stream starts with this id.
    pub decoder_start: Option<u32>,
    pub eos: Option<u32>,
}

impl<'a> RowModel<'a> {
    /// What `source`'s model needs, with `tok` its tokenizer.
    pub fn new(source: &graft_models::ModelSource, tok: &'a crate::Tokenize<'a>) -> Self {
        let t5 = source.t5_config();
        Self {
            tok,
            decoder_start: t5.map(|c| c.decoder_start_token_id.unwrap_or(0)),
            eos: t5
                .and_then(|c| c.eos_ids().first().copied())
                .or(tok.tokenizer.eos_id)
                .or(source.generation.eos_token_ids.first().copied()),
        }
    }
}

/// The one way from a `[data]` section to rows: every task's training rows (from `shard` when
/// set) and every eval row, shaped for the objective and the model; `seed` draws the denoising
/// noise. Each row (and each of its other responses) knows its task's index.
pub fn load_section(
    d: &DataSection,
    model: &RowModel,
    shape: RowShape,
    seed: u64,
    reader: &RowReader,
) -> Result<SectionRows, RowError> {
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
    let files = Files {
        d,
        model,
        shape,
        seed,
    };
    let shard = d.shard.map(|[i, n]| (i, n));
    let (mut out, mut evals, mut report) = (Vec::new(), Vec::new(), Vec::new());
    for task in tasks {
        let pipeline = || {
            crate::preprocess::Pipeline::new(&task.preprocessors, task.features.clone())
                .map_err(|e| RowError::Recipe(format!("data.tasks `{}`: {e}", task.name)))
        };
        // Training rows come from this process's shard; eval rows are read whole.
        let train_reader = reader.for_task(pipeline()?, shard);
        let eval_reader = reader.for_task(pipeline()?, None);
        // Eval rows first (as before: skipped-row reports keep their order).
        let mut eval = match &task.eval {
            Some(p) => files.load(p, false, &eval_reader)?,
            None => Vec::new(),
        };
        let mut rows = files.load(&task.train, d.packing, &train_reader)?;
        if !task.preprocessors.is_empty() {
            report.push((task.name.clone(), train_reader.pipeline.report()));
        }
        let index = out.len() as u32;
        for r in rows.iter_mut().chain(eval.iter_mut()) {
            r.for_each_part_mut(|p| p.task = Some(index));
        }
        evals.extend(eval);
        out.push((task, rows));
    }
    if let (None, Some(e)) = (&d.train, &d.eval) {
        // The section-wide eval file of a mixture, read like training rows.
        evals.extend(files.load(e, d.packing, reader)?);
    }
    Ok(SectionRows {
        tasks: out,
        eval: evals,
        preprocessing: report,
    })
}

/// Reads one row file the way the section, the model and the objective ask.
struct Files<'a> {
    d: &'a DataSection,
    model: &'a RowModel<'a>,
    shape: RowShape,
    seed: u64,
}

impl Files<'_> {
    /// Denoising rows when `[data.span_corruption]` or `[data.ul2]` is set, seq2seq rows for
    /// encoder-decoder models, token-cache rows for a cache folder, else decoder rows.
    fn load(
        &self,
        path: &Path,
        packing: bool,
        reader: &RowReader,
    ) -> Result<Vec<TrainRow>, RowError> {
        let (d, shape, tok) = (self.d, self.shape, self.model.tok);
        if let Some(denoising) = self.denoising()? {
            let eos = self
                .model
                .eos
                .ok_or_else(|| RowError::Recipe("the tokenizer has no EOS token".into()))?;
            let start = self.model.decoder_start;
            return denoising::denoising_rows(
                path,
                tok.tokenizer,
                eos,
                d.max_seq_len,
                &denoising,
                start,
                self.seed,
                reader,
            );
        }
        if let Some(start) = self.model.decoder_start {
            if d.packing {
                return Err(RowError::Recipe(
                    "data.packing: not supported for encoder-decoder models".into(),
                ));
            }
            return seq2seq::seq2seq_rows(path, tok.tokenizer, start, d.max_seq_len, shape, reader);
        }
        if path.join("cache.json").exists() {
            if shape.pairs || shape.labelled {
                return Err(RowError::Recipe(format!(
                    "{}: a token cache holds plain text; `{}` needs its own row shapes",
                    path.display(),
                    shape.objective
                )));
            }
            if !reader.pipeline.is_empty() {
                return Err(RowError::Recipe(format!(
                    "{}: a token cache holds tokens; preprocessors run on rows",
                    path.display()
                )));
            }
            return cached::cache_rows(path, d.max_seq_len, packing, reader.shard);
        }
        decoder::decoder_rows(path, tok, shape, packing, reader)
    }

    /// The section's denoising setting, if any (for sequence objectives without packing only).
    fn denoising(&self) -> Result<Option<denoising::Denoising<'_>>, RowError> {
        let den = match (&self.d.span_corruption, &self.d.ul2) {
            (Some(_), Some(_)) => {
                return Err(RowError::Recipe(
                    "data: give span_corruption or ul2, not both".into(),
                ))
            }
            (Some(s), None) => denoising::Denoising::Span(s),
            (None, Some(u)) => denoising::Denoising::Ul2(u),
            (None, None) => return Ok(None),
        };
        if self.shape.pairs || self.shape.labelled || self.d.packing {
            return Err(RowError::Recipe(format!(
                "data.span_corruption / data.ul2: a sequence objective (lm) without packing, not `{}`",
                self.shape.objective
            )));
        }
        Ok(Some(den))
    }
}
