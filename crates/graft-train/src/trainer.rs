//! The training loop, written out plainly (llm.c's main is the model): set up the model, the
//! data, the optimizer and the output folder; then for each optimizer step gather the step's
//! micro-batches, run policy (and reference) forwards, let the objective turn log-probs into a
//! loss, accumulate gradients, clip, update, log, evaluate, checkpoint; then save. Step s's logged
//! loss is measured on its batch before update s, so step 0 is the untrained model.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use graft_data::{ChatTemplate, Tokenize};
use graft_models::{Model, ModelSource};
use serde_json::{json, Value};

use crate::batch::{collate, Batch};
use crate::checkpoint::{self, TrainerState};
use crate::metrics::MetricsLog;
use crate::mixture::Mixture;
use crate::net::build_model;
use crate::objectives::{registry, Objective};
use crate::optim::AdamW;
use crate::schedule::Schedule;
use crate::step::{evaluate, micro_seeds, optimizer_step, Eval};
use crate::task_eval::TaskEval;
use crate::{manifest, metrics, Recipe, TrainError};
use graft_data::rows::{RowModel, RowReader, TrainRow};

pub struct TrainOptions {
    pub output: PathBuf,
    pub resume: bool,
    pub progress: bool,
}

#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub output: PathBuf,
    pub steps: usize,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    pub final_eval_loss: Option<f64>,
}

pub fn train(recipe: &Recipe, opts: &TrainOptions) -> Result<TrainSummary, TrainError> {
    let mut run = Run::setup(recipe, opts)?;
    for step in run.state.step..recipe.train.steps {
        run.step(step)?;
    }
    run.finish()
}

/// The model being trained, with what it was built from.
struct Trained {
    source: ModelSource,
    net: Model,
    /// The trainable variables (keys = HF checkpoint keys, or PEFT's adapter keys).
    varmap: VarMap,
    adapter: Option<graft_adapters::LoraConfig>,
    /// Kept only by objectives that score fresh rows against it every step (KTO).
    reference: Option<Model>,
    dtype: DType,
}

/// A training run in progress.
struct Run<'a> {
    recipe: &'a Recipe,
    opts: &'a TrainOptions,
    objective: Box<dyn Objective>,
    schedule: Schedule,
    model: Trained,
    loader: Mixture,
    eval_rows: Vec<TrainRow>,
    tasks: TaskEval,
    opt: AdamW,
    state: TrainerState,
    log: MetricsLog,
    last_checkpoint: String,
    bar: indicatif::ProgressBar,
    first_loss: Option<f64>,
    last_loss: Option<f64>,
    start: std::time::Instant,
    start_tokens: u64,
}

impl<'a> Run<'a> {
    /// Model, data, optimizer, output folder (fresh, or resumed from its latest checkpoint).
    fn setup(recipe: &'a Recipe, opts: &'a TrainOptions) -> Result<Self, TrainError> {
        let objective_spec: Value = serde_json::to_value(&recipe.objective)
            .map_err(|e| TrainError::Recipe(e.to_string()))?;
        let objective = registry::objective(&objective_spec).map_err(TrainError::Recipe)?;
        let t = &recipe.train;
        let schedule = Schedule::parse(&t.schedule, t.decay_fraction)
            .map_err(|e| TrainError::Recipe(format!("train.schedule: {e}")))?;
        // The output folder is checked before anything (the reference cache) is written to it.
        let out = &opts.output;
        let metrics_path = out.join("metrics.jsonl");
        if !opts.resume && (metrics_path.exists() || !checkpoint::list(out).is_empty()) {
            return Err(TrainError::Io(format!(
                "{}: holds an earlier run; use --resume or another --output",
                out.display()
            )));
        }
        let mut model = load_model(recipe, objective.as_ref())?;
        let (mut loader, eval_rows, mut report) =
            load_data(recipe, &mut model, objective.as_ref(), opts)?;
        let tasks = TaskEval::open(
            &t.eval_tasks,
            t.eval_tasks_limit,
            t.eval_allow_code_execution,
            t.eval_allow_network,
        )?;
        let mut opt = AdamW::new(&model.varmap, t.beta1, t.beta2, t.eps, t.weight_decay)?;
        crate::trainable::restrict(&mut opt, t, &model.source.config_json)?;

        std::fs::create_dir_all(out)
            .map_err(|e| TrainError::Io(format!("{}: {e}", out.display())))?;
        let (state, last_checkpoint) = match opts.resume {
            true => resume(out, &model.varmap, &mut opt, &mut loader)?,
            false => (TrainerState::fresh(t.seed), "none".into()),
        };
        report["objective"] = json!(objective.name());
        report["train_rows"] = json!(loader.rows());
        report["tasks"] = json!(loader.names);
        report["eval_rows"] = json!(eval_rows.len());
        report["resumed_from_step"] = json!(state.step);
        write_manifest(recipe, &out.join("manifest.json"), report)?;
        let bar = progress_bar(opts.progress, t.steps);
        bar.set_position(state.step as u64);
        Ok(Run {
            recipe,
            opts,
            objective,
            schedule,
            model,
            loader,
            eval_rows,
            tasks,
            opt,
            start_tokens: state.tokens,
            state,
            log: MetricsLog::open(&metrics_path)?,
            last_checkpoint,
            bar,
            first_loss: None,
            last_loss: None,
            start: std::time::Instant::now(),
        })
    }

    /// One optimizer step: batches, (evaluation), update, log, (checkpoint).
    fn step(&mut self, step: usize) -> Result<(), TrainError> {
        let t = &self.recipe.train;
        let lr = self.schedule.lr(t.lr, step, t.steps, t.warmup_steps);
        let picked = self.loader.next(step, t.batch_size * t.grad_accum);
        let batches = picked
            .chunks(t.batch_size)
            .map(|rows| collate(rows, &Device::Cpu))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let eval = match t.eval_every > 0 && step % t.eval_every == 0 {
            true => self.evaluate()?,
            false => None,
        };
        let m = &self.model;
        let out = optimizer_step(
            &m.net,
            m.reference.as_ref(),
            self.objective.as_ref(),
            &mut self.opt,
            &batches,
            lr,
            t.max_grad_norm,
            micro_seeds(t.seed, step),
        )
        .map_err(|e| match e {
            TrainError::NonFinite { what, value, .. } => TrainError::NonFinite {
                step,
                what,
                value,
                checkpoint: self.last_checkpoint.clone(),
            },
            other => other,
        })?;
        self.first_loss.get_or_insert(out.loss);
        self.last_loss = Some(out.loss);
        if step % t.log_every.max(1) == 0 || step + 1 == t.steps || eval.is_some() {
            let mut row = json!({"step": step, "loss": out.loss, "lr": lr, "tokens": self.state.tokens,
                "grad_norm": out.grad_norm, "epoch": self.loader.loaders[0].epoch});
            if let Some(tps) = self.tokens_per_second() {
                row["tokens_per_second"] = json!(tps);
            }
            for (k, v) in &out.metrics {
                row[*k] = json!(v);
            }
            put_eval(&mut row, &eval);
            self.log.write(&row)?;
        }
        self.advance(step, &batches)?;
        self.bar.set_message(format!(
            "loss {:.4} | {:.0} tok/s",
            out.loss,
            self.tokens_per_second().unwrap_or(0.0)
        ));
        let save_now = t.save_every > 0 && self.state.step.is_multiple_of(t.save_every);
        if save_now || self.state.step == t.steps {
            self.save_checkpoint()?;
        }
        Ok(())
    }

    /// The state after step `step`: its count, tokens and the loader's position.
    fn advance(&mut self, step: usize, batches: &[Batch]) -> Result<(), TrainError> {
        self.state.step = step + 1;
        self.state.tokens += batches.iter().map(|b| b.input_tokens as u64).sum::<u64>();
        let positions = self.loader.positions();
        (self.state.epoch, self.state.cursor) = positions[0];
        if positions.len() > 1 {
            self.state.tasks = positions;
        }
        self.bar.set_position(self.state.step as u64);
        Ok(())
    }

    fn tokens_per_second(&self) -> Option<f64> {
        let elapsed = self.start.elapsed().as_secs_f64();
        (elapsed > 0.0).then(|| (self.state.tokens - self.start_tokens) as f64 / elapsed)
    }

    /// Held-out evaluation with the current weights, when there is an eval set, and the
    /// evaluation tasks' metrics.
    fn evaluate(&self) -> Result<Option<Eval>, TrainError> {
        if self.eval_rows.is_empty() && self.tasks.is_empty() {
            return Ok(None);
        }
        let m = &self.model;
        let (loss, mut metrics) = match self.eval_rows.is_empty() {
            true => (f64::NAN, Vec::new()),
            false => evaluate(
                &m.net,
                m.reference.as_ref(),
                self.objective.as_ref(),
                &self.eval_rows,
                self.recipe.train.batch_size,
                &Device::Cpu,
            )?,
        };
        for (k, v) in self.tasks.run(&m.net, &m.source)? {
            metrics.push((k, v.as_f64().unwrap_or(f64::NAN)));
        }
        Ok(Some((loss, metrics)))
    }

    /// checkpoint-<step>/: an HF (or PEFT adapter) directory plus optimizer and loader state;
    /// weights that are not finite are never saved.
    fn save_checkpoint(&mut self) -> Result<(), TrainError> {
        let (weights_file, files) = saved_files(&self.model)?;
        let weights: Vec<(String, Tensor)> = self.opt.weights();
        for (name, t) in &weights {
            let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            if values.iter().any(|v| !v.is_finite()) {
                return Err(TrainError::NonFinite {
                    step: self.state.step,
                    what: "a parameter",
                    value: f64::NAN,
                    checkpoint: format!("{} (`{name}`; not saved)", self.last_checkpoint),
                });
            }
        }
        let weights = weights.into_iter().collect();
        let optimizer = self.opt.state().into_iter().collect();
        let dir = checkpoint::write(
            &self.opts.output,
            &files,
            weights_file,
            &weights,
            &optimizer,
            &self.state,
            self.recipe.train.keep_last,
        )?;
        self.last_checkpoint = dir.display().to_string();
        Ok(())
    }

    /// The final evaluation, final/ and loss.png.
    fn finish(mut self) -> Result<TrainSummary, TrainError> {
        self.bar.finish_and_clear();
        let t = &self.recipe.train;
        let final_eval = self.evaluate()?;
        if final_eval.is_some() {
            let mut row = json!({"step": t.steps, "tokens": self.state.tokens});
            put_eval(&mut row, &final_eval);
            self.log.write(&row)?;
        }
        let out = &self.opts.output;
        save_final(&self.model, &self.opt, &out.join("final"))?;
        let title = format!(
            "{} — {}",
            self.objective.name(),
            self.recipe
                .model
                .path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default()
        );
        metrics::plot(&out.join("metrics.jsonl"), &out.join("loss.png"), &title)?;
        Ok(TrainSummary {
            output: out.clone(),
            steps: t.steps,
            first_loss: self.first_loss,
            last_loss: self.last_loss,
            final_eval_loss: final_eval.map(|(e, _)| e).filter(|e| e.is_finite()),
        })
    }
}

/// Loads the latest checkpoint in `out`: weights, optimizer moments, data position; drops the
/// metrics logged after it. Returns the trainer state and the checkpoint's folder.
fn resume(
    out: &Path,
    varmap: &VarMap,
    opt: &mut AdamW,
    loader: &mut Mixture,
) -> Result<(TrainerState, String), TrainError> {
    let stale = graft_models::fsio::sweep_stale(out);
    if stale > 0 {
        eprintln!(
            "removed {stale} half-written file(s) of a killed run in {}",
            out.display()
        );
    }
    let (dir, ck) = checkpoint::latest_verified(out)?;
    crate::net::set_vars(varmap, &ck.weights, &dir)?;
    opt.load_state(&ck.optimizer, ck.state.step)?;
    match ck.state.tasks.is_empty() {
        true => loader.seek(&[(ck.state.epoch, ck.state.cursor)]),
        false => loader.seek(&ck.state.tasks),
    }
    metrics::truncate_after(&out.join("metrics.jsonl"), ck.state.step)?;
    Ok((ck.state, dir.display().to_string()))
}

/// The model as trainable variables (a frozen base with adapter variables when the recipe has an
/// `[adapter]`), checkpointing if asked, and a reference model if the objective keeps one.
fn load_model(recipe: &Recipe, objective: &dyn Objective) -> Result<Trained, TrainError> {
    // bf16: weights and activations in bf16, f32 master weights and optimizer state (optim.rs).
    let dtype = match recipe.model.dtype.as_str() {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        other => {
            return Err(TrainError::Recipe(format!(
                "model.dtype: `{other}` is not supported (f32, bf16)"
            )))
        }
    };
    let quantization = recipe
        .model
        .quantized
        .quantization()
        .map_err(TrainError::Recipe)?;
    if quantization != graft_models::Quantization::None && recipe.adapter.is_none() {
        return Err(TrainError::Recipe(
            "model.quantized: a quantized base is frozen; add an [adapter] to train".into(),
        ));
    }
    let source =
        ModelSource::open_with(&recipe.model.path, DType::F32, &Device::Cpu, quantization)?;
    let seq2seq = source.is_seq2seq();
    let tasks: Vec<String> = recipe.data.tasks.iter().map(|t| t.name.clone()).collect();
    let adapter = recipe
        .adapter
        .as_ref()
        .map(|a| a.peft_config(&recipe.model.path, seq2seq, &tasks))
        .transpose()?;
    let varmap = VarMap::new();
    let t = &recipe.train;
    let dropout = recipe.model.attention_dropout;
    let mut net = build_model(&source, dropout, &varmap, adapter.as_ref(), dtype, t.seed)?;
    if t.checkpointing {
        match net.as_decoder_mut() {
            Some(m) if m.side.is_none() => m.checkpointing = true,
            _ => {
                return Err(TrainError::Recipe(
                    "train.checkpointing: supported for decoder-only models (not T5 or LST)".into(),
                ))
            }
        }
    }
    if recipe.reference.is_some() && !objective.needs_reference() {
        return Err(TrainError::Recipe(format!(
            "reference: `{}` does not use a reference model",
            objective.name()
        )));
    }
    // KTO keeps its reference (its KL rows are formed per batch); the others use cached log-probs.
    let reference = match objective.needs_reference() && objective.kl_rows() {
        true => Some(crate::reference::reference_model(
            recipe.reference.as_ref(),
            &source,
            dtype,
        )?),
        false => None,
    };
    Ok(Trained {
        source,
        net,
        varmap,
        adapter,
        reference,
        dtype,
    })
}

/// The training rows in their deterministic loader, the eval rows, and the manifest's report of
/// what reading them did (skipped rows, preprocessing, sharding). Reference log-probs are cached
/// in the rows here; an LST side network is initialised from the training rows.
fn load_data(
    recipe: &Recipe,
    model: &mut Trained,
    objective: &dyn Objective,
    opts: &TrainOptions,
) -> Result<(Mixture, Vec<TrainRow>, Value), TrainError> {
    let tokenizer = model.source.tokenizer()?;
    let template = match tokenizer.chat_template.as_deref() {
        Some(t) => Some(
            ChatTemplate::new(t)
                .map_err(|e| TrainError::Data(format!("{}: {e}", recipe.model.path.display())))?,
        ),
        None => None,
    };
    let tok = Tokenize {
        tokenizer,
        template: template.as_ref(),
        max_len: recipe.data.max_seq_len,
    };
    if recipe.data.packing && (objective.pairs() || objective.kl_rows()) {
        return Err(TrainError::Recipe(format!(
            "data.packing: not supported with `{}`",
            objective.name()
        )));
    }
    let bad_rows = RowReader::new(recipe.data.skip_bad_rows);
    let graft_data::rows::SectionRows {
        mut tasks,
        eval: mut eval_rows,
        preprocessing,
    } = graft_data::rows::load_section(
        &recipe.data,
        &RowModel::new(&model.source, &tok),
        crate::objectives::row_shape(objective),
        recipe.train.seed,
        &bad_rows,
    )?;
    if bad_rows.count() > 0 {
        let errors = bad_rows.errors.borrow();
        eprintln!("skipped {} bad rows (first: {})", errors.len(), errors[0]);
    }
    for (task, steps) in &preprocessing {
        let line: Vec<String> = steps
            .iter()
            .map(|s| format!("{} {}→{}", s.kind, s.rows_in, s.rows_out))
            .collect();
        eprintln!("task {task}: {}", line.join(", "));
    }
    // Reference log-probs are computed once (or read from OUT's cache of an earlier start), and
    // the reference model is dropped.
    if objective.needs_reference() && !objective.kl_rows() {
        let (source, dtype, out) = (&model.source, model.dtype, &opts.output);
        crate::reference::cache_log_probs(
            &mut tasks,
            &mut eval_rows,
            recipe,
            source,
            dtype,
            out,
            opts.progress,
        )?;
    }
    let seed = recipe.train.seed;
    let loader = match recipe.data.tasks.is_empty() {
        true => Mixture::single(tasks.pop().expect("one task").1, seed),
        false => {
            let mix = recipe.data.mixture.clone().unwrap_or_default();
            Mixture::new(tasks, &mix, seed).map_err(TrainError::Recipe)?
        }
    };
    init_lst(recipe, model, &loader, opts)?;
    let report = json!({"skipped_bad_rows": bad_rows.errors.borrow().clone(),
        "preprocessing": preprocessing, "shard": recipe.data.shard});
    Ok((loader, eval_rows, report))
}

/// An LST side network starts as a pruned copy of the backbone, chosen from the training rows;
/// deterministic, so a resumed run rebuilds the same side network shape.
fn init_lst(
    recipe: &Recipe,
    model: &mut Trained,
    loader: &Mixture,
    opts: &TrainOptions,
) -> Result<(), TrainError> {
    let (Some(cfg), Some(a)) = (model.adapter.as_mut(), recipe.adapter.as_ref()) else {
        return Ok(());
    };
    if cfg.peft_type != graft_adapters::PeftType::Lst {
        return Ok(());
    }
    let rows = loader.loaders.iter().flat_map(|l| l.rows());
    crate::lst_init::init_side(
        &mut model.net,
        &model.source,
        &model.varmap,
        cfg,
        a,
        rows,
        recipe.train.seed,
        opts.progress,
    )
}

/// What checkpoints and final/ hold: an HF directory, or a PEFT adapter directory — the
/// weights file's name and the files beside it.
fn saved_files(model: &Trained) -> Result<(&'static str, Vec<(&'static str, String)>), TrainError> {
    Ok(match &model.adapter {
        None => (
            "model.safetensors",
            vec![(
                "config.json",
                json_text(&model.source.config_json_for(DType::F32))?,
            )],
        ),
        Some(cfg) => (
            "adapter_model.safetensors",
            vec![("adapter_config.json", json_text(cfg)?)],
        ),
    })
}

/// final/: the trained model as an HF directory (with the tokenizer files), or the adapter as a
/// PEFT directory; an earlier final/ (a resumed run) is replaced in one rename.
fn save_final(model: &Trained, opt: &AdamW, dir: &Path) -> Result<(), TrainError> {
    let weights: std::collections::HashMap<String, Tensor> = opt
        .all_vars()
        .map(|(n, v)| (n.to_string(), v.as_tensor().clone()))
        .collect();
    let staged = dir.with_file_name(".final.new");
    let io = |p: &Path, e: std::io::Error| TrainError::Io(format!("{}: {e}", p.display()));
    if staged.exists() {
        std::fs::remove_dir_all(&staged).map_err(|e| io(&staged, e))?;
    }
    match &model.adapter {
        None => {
            let files = model.source.tokenizer_files()?;
            let config = model.source.config_json_for(model.dtype);
            graft_models::save::save_hf_dir(&staged, &config, &weights, &files, false)?;
        }
        Some(cfg) => graft_adapters::peft_format::save(&staged, cfg, &weights)
            .map_err(|e| TrainError::Io(e.to_string()))?,
    }
    graft_models::fsio::replace_dir(&staged, dir).map_err(|e| io(dir, e))
}

/// manifest.json: the recipe, a hash of every input, the seed and `run` facts.
fn write_manifest(recipe: &Recipe, path: &Path, run: Value) -> Result<(), TrainError> {
    let recipe_json = serde_json::to_value(recipe).map_err(|e| TrainError::Io(e.to_string()))?;
    let mut input_paths: Vec<&Path> = vec![recipe.model.path.as_path()];
    input_paths.extend(recipe.data.train.as_deref());
    input_paths.extend(recipe.data.eval.as_deref());
    for task in &recipe.data.tasks {
        input_paths.push(&task.train);
        input_paths.extend(task.eval.as_deref());
    }
    let inputs = manifest::inputs(&input_paths)?;
    manifest::write(path, &recipe_json, inputs, recipe.train.seed, run)
}

fn progress_bar(show: bool, steps: usize) -> indicatif::ProgressBar {
    let bar = match show {
        true => indicatif::ProgressBar::new(steps as u64),
        false => indicatif::ProgressBar::hidden(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps {msg} ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Adds `eval_loss` and the `eval_*` metrics to a metrics row.
fn put_eval(row: &mut Value, eval: &Option<Eval>) {
    if let Some((loss, metrics)) = eval {
        if loss.is_finite() {
            row["eval_loss"] = json!(loss);
        }
        for (k, v) in metrics {
            row[k.as_str()] = json!(v);
        }
    }
}

fn json_text(v: &impl serde::Serialize) -> Result<String, TrainError> {
    serde_json::to_string_pretty(v).map_err(|e| TrainError::Io(e.to_string()))
}
