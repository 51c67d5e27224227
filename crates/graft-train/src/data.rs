//! Training rows from a JSONL or Parquet file of TRL-shaped rows, and a deterministic loader: the order of rows
//! in epoch e is a seeded permutation, a pure function of (seed, epoch), and the loader's position
//! (epoch, cursor) is all a checkpoint needs to resume it exactly.
//!
//! Shapes: a batch is `ids` (B, T) u32, `mask` (B, T-1) f32 (target tokens), and for packed rows
//! `positions`, `segments` (B, T) u32.

use std::path::Path;

use candle_core::{Device, Result as CResult, Tensor};
use graft_data::{pack, parse_row, Example, Tokenize};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

use crate::TrainError;

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

/// Reads and tokenizes every row of `path` (JSONL or Parquet; a malformed row is an error naming
/// file and line).
/// The objective says which rows it takes: every token a target (lm) or completions only,
/// preference pairs, ranked lists, or KTO's labelled rows.
pub fn load_rows(
    path: &Path,
    tok: &Tokenize,
    objective: &dyn crate::objectives::Objective,
    packing: bool,
    reader: &RowReader,
) -> Result<Vec<TrainRow>, TrainError> {
    let (completion_only, pairs, labelled) = (
        objective.completion_only(),
        objective.pairs(),
        objective.kl_rows(),
    );
    let at =
        |line: usize, msg: String| TrainError::Data(format!("{}:{line}: {msg}", path.display()));
    let mut examples: Vec<Example> = Vec::new();
    let mut rejected: Vec<Example> = Vec::new();
    let mut labels: Vec<bool> = Vec::new();
    let mut lists: Vec<TrainRow> = Vec::new();
    reader.for_each_row(path, |_, n, obj| {
        let row = parse_row(&obj).map_err(|e| at(n, e))?;
        if objective.lists() {
            let (responses, scores) = tok.listwise(&row).map_err(|e| at(n, e))?;
            if let Some(first) = lists.first() {
                if first.others.len() + 1 != responses.len() {
                    return Err(at(n, format!(
                        "field `responses`: {} responses, the first row has {} (lists of one length, so batches stack)",
                        responses.len(),
                        first.others.len() + 1
                    )));
                }
            }
            let mut parts = responses.into_iter().map(|e| TrainRow {
                input_ids: e.input_ids,
                targets: e.targets,
                ..Default::default()
            });
            let mut head = parts.next().expect("two or more responses");
            head.others = parts.collect();
            head.scores = Some(scores.iter().map(|&x| x as f32).collect());
            lists.push(head);
            return Ok(());
        }
        if labelled {
            if !matches!(row, graft_data::Row::PromptCompletion { .. }) {
                return Err(at(
                    n,
                    "this objective needs {\"prompt\", \"completion\", \"label\"} rows".into(),
                ));
            }
            let label = obj
                .get("label")
                .and_then(|v| v.as_bool())
                .ok_or_else(|| at(n, "field `label`: missing or not true/false".into()))?;
            let ex = tok.example(&row).map_err(|e| at(n, e))?;
            labels.push(label);
            examples.push(ex);
            return Ok(());
        }
        if pairs {
            let (c, r) = tok.preference(&row).map_err(|e| at(n, e))?;
            examples.push(c);
            rejected.push(r);
            return Ok(());
        }
        let mut ex = tok.example(&row).map_err(|e| at(n, e))?;
        if !completion_only {
            ex.targets = (0..ex.input_ids.len()).map(|i| i > 0).collect();
        }
        examples.push(ex);
        Ok(())
    })?;
    if objective.lists() {
        if lists.is_empty() {
            return Err(TrainError::Data(format!("{}: no rows", path.display())));
        }
        return Ok(lists);
    }
    if labelled {
        if examples.is_empty() {
            return Err(TrainError::Data(format!("{}: no rows", path.display())));
        }
        return Ok(examples
            .into_iter()
            .zip(labels)
            .map(|(e, l)| TrainRow {
                input_ids: e.input_ids,
                targets: e.targets,
                label: Some(l),
                ..Default::default()
            })
            .collect());
    }
    if pairs {
        if examples.is_empty() {
            return Err(TrainError::Data(format!("{}: no rows", path.display())));
        }
        let row = |e: Example| TrainRow {
            input_ids: e.input_ids,
            targets: e.targets,
            ..Default::default()
        };
        return Ok(examples
            .into_iter()
            .zip(rejected)
            .map(|(c, r)| TrainRow {
                others: vec![row(r)],
                ..row(c)
            })
            .collect());
    }
    if examples.is_empty() {
        return Err(TrainError::Data(format!("{}: no rows", path.display())));
    }
    Ok(example_rows(examples, packing, tok.max_len))
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

pub struct Batch {
    pub ids: Tensor,
    pub mask: Tensor,
    /// (B, T-1): 1 at every real target position (all but padding), prompt included.
    pub valid: Tensor,
    pub packed: Option<(Tensor, Tensor)>,
    /// Cached reference log-probs (B, T-1), when every row has them.
    pub ref_logps: Option<Tensor>,
    /// KTO labels (B) of the first half of the rows; the second half are their KL rows.
    pub labels: Option<Tensor>,
    /// List labels (P, K) of listwise rows (the K·P rows are slot-major).
    pub scores: Option<Tensor>,
    /// Each row's task index (`u32::MAX`: none).
    pub tasks: Vec<u32>,
    /// Encoder ids and 0/1 mask (B, S), for encoder-decoder models.
    pub encoder: Option<(Tensor, Tensor)>,
    pub target_tokens: usize,
    pub input_tokens: usize,
    pub rows: usize,
}

/// Right-pads `rows` to one length. Padding is never a target, and under a causal mask no real token
/// attends to it, so padding changes nothing (a real EOS stays a target even when pad = eos).
/// KTO's KL row for row i: its prompt with row i−1's completion (TRL's pairing within a batch).
fn kl_rows(rows: &[&TrainRow]) -> Vec<TrainRow> {
    let split = |r: &TrainRow| {
        r.targets
            .iter()
            .position(|&t| t)
            .unwrap_or(r.input_ids.len())
    };
    (0..rows.len())
        .map(|i| {
            let (p, c) = (rows[i], rows[(i + rows.len() - 1) % rows.len()]);
            if p.encoder_ids.is_some() {
                // Seq2seq: the prompt is the encoder input, the completion the decoder stream.
                return TrainRow {
                    task: p.task,
                    encoder_ids: p.encoder_ids.clone(),
                    input_ids: c.input_ids.clone(),
                    targets: c.targets.clone(),
                    ..Default::default()
                };
            }
            let (pn, cn) = (split(p), split(c));
            let mut input_ids = p.input_ids[..pn].to_vec();
            input_ids.extend_from_slice(&c.input_ids[cn..]);
            let targets = (0..input_ids.len()).map(|j| j >= pn.max(1)).collect();
            TrainRow {
                input_ids,
                targets,
                ..Default::default()
            }
        })
        .collect()
}

/// Preference pairs become 2P rows: the P chosen sequences, then their P rejected ones; lists of K
/// responses become K·P rows the same way (every first response, then every second, …), with
/// their labels as `scores` (P, K). Labelled
/// (KTO) rows become 2B rows: the B rows, then their KL rows.
pub fn collate(rows: &[&TrainRow], device: &Device) -> CResult<Batch> {
    if rows.iter().any(|r| r.label.is_some()) {
        let kl = kl_rows(rows);
        let mut all: Vec<&TrainRow> = rows.to_vec();
        all.extend(kl.iter());
        let mut batch = collate_rows(&all, device)?;
        let labels: Vec<bool> = rows.iter().map(|r| r.label.unwrap_or(true)).collect();
        batch.labels = Some(crate::objectives::kto::label_tensor(&labels, device)?);
        return Ok(batch);
    }
    if rows.iter().any(|r| !r.others.is_empty()) {
        let k = 1 + rows[0].others.len();
        if rows.iter().any(|r| 1 + r.others.len() != k) {
            return Err(candle_core::Error::Msg(
                "a batch mixes lists of different lengths".into(),
            ));
        }
        // Slot-major: every row's first response, then every row's second, …
        let all: Vec<&TrainRow> = (0..k)
            .flat_map(|slot| {
                rows.iter()
                    .map(move |r| r.parts().nth(slot).expect("k parts"))
            })
            .collect();
        let mut batch = collate_rows(&all, device)?;
        if rows.iter().all(|r| r.scores.is_some()) {
            let scores: Vec<f32> = rows
                .iter()
                .flat_map(|r| r.scores.clone().unwrap_or_default())
                .collect();
            batch.scores = Some(Tensor::from_vec(scores, (rows.len(), k), device)?);
        }
        return Ok(batch);
    }
    collate_rows(rows, device)
}

fn collate_rows(rows: &[&TrainRow], device: &Device) -> CResult<Batch> {
    let t = rows.iter().map(|r| r.input_ids.len()).max().unwrap_or(0);
    let (mut ids, mut mask, mut pos, mut seg) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let packed = rows.iter().any(|r| r.packed.is_some());
    let cached = rows.iter().all(|r| r.ref_logps.is_some());
    let mut refs = Vec::new();
    let mut valid = Vec::new();
    for r in rows {
        let n = r.input_ids.len();
        valid.extend(std::iter::repeat_n(1f32, n.saturating_sub(1)));
        valid.extend(std::iter::repeat_n(0f32, t - n.max(1)));
        if let (true, Some(lp)) = (cached, &r.ref_logps) {
            refs.extend_from_slice(lp);
            refs.extend(std::iter::repeat_n(0f32, t - n));
        }
        ids.extend_from_slice(&r.input_ids);
        ids.extend(std::iter::repeat_n(0u32, t - n));
        mask.extend(r.targets[1..].iter().map(|&b| b as u8 as f32));
        mask.extend(std::iter::repeat_n(0f32, t - n));
        if packed {
            let (p, s) = r
                .packed
                .clone()
                .unwrap_or_else(|| ((0..n as u32).collect(), vec![0; n]));
            pos.extend(p);
            pos.extend(n as u32..t as u32);
            seg.extend(s);
            seg.extend(std::iter::repeat_n(u32::MAX, t - n));
        }
    }
    let b = rows.len();
    // Encoder inputs, right-padded with id 0 (T5's pad) and masked.
    let encoder = if rows.iter().any(|r| r.encoder_ids.is_some()) {
        let s = rows
            .iter()
            .map(|r| r.encoder_ids.as_ref().map_or(0, Vec::len))
            .max()
            .unwrap_or(0)
            .max(1);
        let (mut enc, mut enc_mask) = (Vec::with_capacity(b * s), Vec::with_capacity(b * s));
        for r in rows {
            let e = r.encoder_ids.as_deref().unwrap_or(&[]);
            enc.extend(e.iter().copied().chain(std::iter::repeat_n(0, s - e.len())));
            enc_mask.extend((0..s).map(|j| if j < e.len() { 1f32 } else { 0.0 }));
        }
        Some((
            Tensor::from_vec(enc, (b, s), device)?,
            Tensor::from_vec(enc_mask, (b, s), device)?,
        ))
    } else {
        None
    };
    Ok(Batch {
        ids: Tensor::from_vec(ids, (b, t), device)?,
        encoder,
        mask: Tensor::from_vec(mask, (b, t - 1), device)?,
        valid: Tensor::from_vec(valid, (b, t.saturating_sub(1)), device)?,
        labels: None,
        scores: None,
        tasks: rows.iter().map(|r| r.task.unwrap_or(u32::MAX)).collect(),
        ref_logps: if cached && t > 1 {
            Some(Tensor::from_vec(refs, (b, t - 1), device)?)
        } else {
            None
        },
        packed: if packed {
            Some((
                Tensor::from_vec(pos, (b, t), device)?,
                Tensor::from_vec(seg, (b, t), device)?,
            ))
        } else {
            None
        },
        target_tokens: rows
            .iter()
            .map(|r| r.targets.iter().filter(|&&x| x).count())
            .sum(),
        input_tokens: rows
            .iter()
            .map(|r| r.input_ids.len() + r.encoder_ids.as_ref().map_or(0, Vec::len))
            .sum(),
        rows: b,
    })
}

/// How a task's rows are read: its shard of the source, its preprocessors, and what happens to
/// rows that do not parse or tokenize — they stop the read, or (`skip`) are recorded and passed
/// over. Errors are shared by every task of a run.
#[derive(Clone, Default)]
pub struct RowReader {
    pub skip: bool,
    pub errors: std::rc::Rc<std::cell::RefCell<Vec<String>>>,
    pub pipeline: std::rc::Rc<graft_data::preprocess::Pipeline>,
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
        pipeline: graft_data::preprocess::Pipeline,
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
        ) -> Result<(), TrainError>,
    ) -> Result<(), TrainError> {
        let (index, count) = self.shard.unwrap_or((0, 1));
        let mut seen = 0;
        for (i, item) in graft_data::source::rows_iter(path)
            .map_err(TrainError::Data)?
            .enumerate()
        {
            if i % count != index {
                continue;
            }
            let rows = item.map_err(TrainError::Data).and_then(|(line, obj)| {
                let rows = match self.pipeline.is_empty() {
                    true => vec![obj],
                    false => self
                        .pipeline
                        .run(obj)
                        .map_err(|e| TrainError::Data(format!("{}:{line}: {e}", path.display())))?,
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
    pub fn handle(&self, result: Result<(), TrainError>) -> Result<(), TrainError> {
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

/// Seeded, resumable iteration over rows, epoch after epoch.
pub struct Loader {
    rows: Vec<TrainRow>,
    seed: u64,
    pub epoch: usize,
    pub cursor: usize,
    order: Vec<usize>,
}

impl Loader {
    pub fn new(rows: Vec<TrainRow>, seed: u64) -> Self {
        let mut l = Self {
            rows,
            seed,
            epoch: 0,
            cursor: 0,
            order: Vec::new(),
        };
        l.seek(0, 0);
        l
    }

    fn permutation(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.rows.len()).collect();
        let mut rng =
            StdRng::seed_from_u64(self.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        order.shuffle(&mut rng);
        order
    }

    /// Moves to `cursor` within `epoch`.
    pub fn seek(&mut self, epoch: usize, cursor: usize) {
        self.epoch = epoch;
        self.cursor = cursor;
        self.order = self.permutation(epoch);
    }

    /// The next `n` rows, crossing into the next epoch when one ends.
    pub fn next(&mut self, n: usize) -> Vec<&TrainRow> {
        let picked: Vec<usize> = (0..n).map(|_| self.next_index()).collect();
        picked.into_iter().map(|i| &self.rows[i]).collect()
    }

    /// Index (into [`Self::rows`]) of the next row, crossing into the next epoch when one ends.
    pub fn next_index(&mut self) -> usize {
        if self.cursor == self.order.len() {
            let next = self.epoch + 1;
            self.seek(next, 0);
        }
        self.cursor += 1;
        self.order[self.cursor - 1]
    }

    pub fn rows(&self) -> &[TrainRow] {
        &self.rows
    }
}

/// Caches the reference model's next-token log-probs in every row (and its other responses), batch by
/// batch, calling `progress` with the rows done.
pub fn cache_reference(
    rows: &mut [TrainRow],
    reference: &graft_models::Model,
    batch_size: usize,
    device: &Device,
    mut progress: impl FnMut(usize),
) -> CResult<()> {
    let mut done = 0;
    for chunk in rows.chunks_mut(batch_size.max(1)) {
        let slots = chunk.iter().map(|r| 1 + r.others.len()).max().unwrap_or(1);
        for slot in 0..slots {
            let group: Vec<TrainRow> = chunk
                .iter()
                .filter_map(|r| r.parts().nth(slot))
                .map(|r| TrainRow {
                    others: Vec::new(),
                    ref_logps: None,
                    ..r.clone()
                })
                .collect();
            let batch = collate_rows(&group.iter().collect::<Vec<_>>(), device)?;
            let values: Vec<Vec<f32>> = crate::net::batch_logps(reference, &batch, false, false)?
                .0
                .to_vec2()?;
            let targets = chunk.iter_mut().filter_map(|r| match slot {
                0 => Some(r),
                s => r.others.get_mut(s - 1),
            });
            for (row, v) in targets.zip(values) {
                let n = row.input_ids.len().saturating_sub(1);
                row.ref_logps = Some(v[..n].to_vec());
            }
        }
        done += chunk.len();
        progress(done);
    }
    Ok(())
}
