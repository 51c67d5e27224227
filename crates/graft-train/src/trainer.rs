//! The training loop, written out plainly: for each optimizer step, gather the step's micro-batches,
//! run policy (and reference) forwards, let the objective turn log-probs into a loss, accumulate
//! gradients, clip, update, log, evaluate, checkpoint. Step s's logged loss is measured on its batch
//! before update s, so step 0 is the untrained model.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use graft_data::{ChatTemplate, Tokenize};
use graft_models::{Arch, Decoder, ModelSource, T5};
use serde_json::{json, Value};

use crate::checkpoint::{self, TrainerState};
use crate::data::collate;
use crate::mixture::Mixture;
use crate::objectives::{registry, Objective};
use crate::optim::AdamW;
use crate::schedule::Schedule;
use crate::step::{evaluate, micro_seeds, optimizer_step, Eval};
use crate::{manifest, metrics, Net, Recipe, TrainError};

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

/// The recipe's `[adapter]` as PEFT's LoraConfig (so final/ loads in `peft`).
fn peft_config(
    a: &crate::recipe::AdapterSection,
    base: &Path,
    seq2seq: bool,
    tasks: &[String],
) -> Result<graft_adapters::LoraConfig, TrainError> {
    let task_type = if seq2seq { "SEQ_2_SEQ_LM" } else { "CAUSAL_LM" };
    let (peft_type, use_dora) = match a.kind.as_str() {
        "lora" => ("LORA", false),
        "dora" => ("LORA", true),
        "sltrain" => ("SLTRAIN", false),
        "mtlora" => ("MTLORA", false),
        "lst" => ("LST", false),
        other => {
            return Err(TrainError::Recipe(format!(
                "adapter.kind: `{other}` is not known (lora, dora, sltrain, mtlora, lst)"
            )))
        }
    };
    if (a.task_r.is_some() || a.task_layers.is_some()) && peft_type != "MTLORA" {
        return Err(TrainError::Recipe(
            "adapter.task_r / task_layers: only for kind = \"mtlora\"".into(),
        ));
    }
    if peft_type == "MTLORA" && tasks.is_empty() {
        return Err(TrainError::Recipe(
            "adapter.kind = \"mtlora\": needs [[data.tasks]] (its tasks)".into(),
        ));
    }
    if a.density.is_some() && peft_type != "SLTRAIN" {
        return Err(TrainError::Recipe(
            "adapter.density: only for kind = \"sltrain\"".into(),
        ));
    }
    let target: Value =
        serde_json::to_value(&a.target_modules).map_err(|e| TrainError::Recipe(e.to_string()))?;
    serde_json::from_value(serde_json::json!({
        "peft_type": peft_type, "task_type": task_type, "r": a.r, "lora_alpha": a.alpha,
        "lora_dropout": a.dropout, "target_modules": target, "layers_to_transform": a.layers_to_transform,
        "use_rslora": a.rslora, "use_dora": use_dora,
        "modules_to_save": if a.modules_to_save.is_empty() { Value::Null } else { json!(a.modules_to_save) }, "bias": "none", "fan_in_fan_out": false,
        "init_lora_weights": true, "inference_mode": true, "base_model_name_or_path": base,
    }))
    .map(|mut c: graft_adapters::LoraConfig| {
        if peft_type == "SLTRAIN" {
            c.other.insert("sparse_density".into(), json!(a.density.unwrap_or(0.03)));
            c.other.insert("sparse_seed".into(), json!(0));
        }
        if peft_type == "LST" {
            c.other.insert("reduction".into(), json!(a.reduction.unwrap_or(8)));
            if let Some(l) = &a.side_layers {
                c.other.insert("side_layers".into(), json!(l));
            }
            c.other.insert("gate_temperature".into(), json!(graft_adapters::lst::TEMPERATURE));
        }
        if peft_type == "MTLORA" {
            c.other.insert("task_names".into(), json!(tasks));
            c.other.insert("task_r".into(), json!(a.task_r.unwrap_or(4)));
            if let Some(l) = &a.task_layers {
                c.other.insert("task_layers".into(), json!(l));
            }
        }
        c
    })
    .map_err(|e| TrainError::Recipe(format!("adapter: {e}")))
}

/// The model to train: all weights as variables, or a frozen base with adapter variables.
fn build_net(
    source: &ModelSource,
    dropout: Option<f64>,
    varmap: &VarMap,
    adapter: Option<&graft_adapters::LoraConfig>,
    dtype: DType,
    seed: u64,
) -> Result<Net, TrainError> {
    let device = Device::Cpu;
    let vars = || VarBuilder::from_varmap(varmap, dtype, &device);
    let mut net: Net = match &source.arch {
        Arch::Decoder(c) => {
            let mut config = c.clone();
            if let Some(p) = dropout {
                config.attention_dropout = p;
            }
            match adapter {
                None => Decoder::new(&config, vars())?.into(),
                Some(_) => source.build_with(&config, dtype, &device)?.into(),
            }
        }
        Arch::T5(c) => {
            // T5 has one dropout rate (embeddings, residuals, attention, FFN).
            let mut config = c.clone();
            if let Some(p) = dropout {
                config.dropout_rate = p;
            }
            match adapter {
                None => {
                    let untied = source.tensors(DType::F32)?.contains_key("lm_head.weight");
                    T5::new_with_head(&config, vars(), untied)?.into()
                }
                Some(_) => T5::new(&config, source.var_builder(dtype, &device)?)?.into(),
            }
        }
    };
    match adapter {
        None => set_vars(varmap, &source.tensors(DType::F32)?, &source.path)?,
        Some(cfg) if cfg.peft_type == "LST" => {
            // Random side blocks for now; lst_init::init_side prunes the backbone into them once
            // the training rows are read.
            let Net::Decoder(backbone) = &mut net else {
                return Err(TrainError::Recipe(
                    "adapter.kind = \"lst\": supported for decoder-only models".into(),
                ));
            };
            let spec = cfg.side_spec(&backbone.cfg).map_err(TrainError::Recipe)?;
            let ladder = graft_adapters::lst::Ladder::new(&backbone.cfg, spec, varmap, seed, None)
                .map_err(|e| TrainError::Recipe(format!("adapter: {e}")))?;
            backbone.side = Some(std::sync::Arc::new(ladder));
        }
        Some(cfg) => {
            graft_adapters::init_trainable(net.linears(), cfg, varmap, seed)
                .map_err(|e| TrainError::Recipe(format!("adapter: {e}")))?;
        }
    }
    Ok(net)
}

pub(crate) fn set_vars(
    varmap: &VarMap,
    tensors: &std::collections::HashMap<String, Tensor>,
    from: &Path,
) -> Result<(), TrainError> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| TrainError::Io("varmap poisoned".into()))?;
    for (name, var) in vars.iter() {
        let t = tensors
            .get(name)
            .ok_or_else(|| TrainError::Io(format!("{}: no tensor `{name}`", from.display())))?;
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

pub fn train(recipe: &Recipe, opts: &TrainOptions) -> Result<TrainSummary, TrainError> {
    let device = Device::Cpu;
    let t = &recipe.train;
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
    let objective_spec: Value =
        serde_json::to_value(&recipe.objective).map_err(|e| TrainError::Recipe(e.to_string()))?;
    let objective: Box<dyn Objective> =
        registry::objective(&objective_spec).map_err(TrainError::Recipe)?;
    let schedule = Schedule::parse(&t.schedule, t.decay_fraction)
        .map_err(|e| TrainError::Recipe(format!("train.schedule: {e}")))?;
    let out = &opts.output;

    // The model as trainable variables (keys = HF checkpoint keys), a frozen reference if needed.
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
    let source = ModelSource::open_with(&recipe.model.path, DType::F32, &device, quantization)?;
    // Full fine-tuning: every weight is a variable. With an adapter: the base is frozen (plain
    // tensors) and the varmap holds only the adapter, under PEFT's keys.
    let varmap = VarMap::new();
    let seq2seq = matches!(source.arch, Arch::T5(_));
    let mut adapter = recipe
        .adapter
        .as_ref()
        .map(|a| {
            let tasks: Vec<String> = recipe.data.tasks.iter().map(|t| t.name.clone()).collect();
            peft_config(a, &recipe.model.path, seq2seq, &tasks)
        })
        .transpose()?;
    let mut model = build_net(
        &source,
        recipe.model.attention_dropout,
        &varmap,
        adapter.as_ref(),
        dtype,
        t.seed,
    )?;
    if t.checkpointing {
        match &mut model {
            Net::Decoder(m) if m.side.is_none() => m.checkpointing = true,
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
    let reference: Option<Net> = if objective.needs_reference() && objective.kl_rows() {
        Some(crate::reference::reference_model(
            recipe.reference.as_ref(),
            &source,
            dtype,
        )?)
    } else {
        None
    };

    // Data.
    let tokenizer = source.tokenizer()?;
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
    let pairs = objective.pairs();
    if pairs && recipe.data.packing {
        return Err(TrainError::Recipe(format!(
            "data.packing: not supported with `{}` (preference pairs)",
            objective.name()
        )));
    }
    let labelled = objective.kl_rows();
    if labelled && recipe.data.packing {
        return Err(TrainError::Recipe(format!(
            "data.packing: not supported with `{}`",
            objective.name()
        )));
    }
    let bad_rows = crate::data::RowReader::new(recipe.data.skip_bad_rows);
    let crate::rows::RecipeRows {
        mut tasks,
        eval: mut eval_rows,
        preprocessing,
    } = crate::rows::load_recipe_rows(recipe, &source, &tok, objective.as_ref(), &bad_rows)?;
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
    if objective.needs_reference() && !labelled {
        crate::reference::cache_log_probs(
            &mut tasks,
            &mut eval_rows,
            recipe,
            &source,
            dtype,
            out,
            opts.progress,
        )?;
    }
    let mut loader = if recipe.data.tasks.is_empty() {
        let (_, rows) = tasks.pop().expect("one task");
        Mixture::single(rows, t.seed)
    } else {
        let mix = recipe.data.mixture.clone().unwrap_or_default();
        Mixture::new(tasks, &mix, t.seed).map_err(TrainError::Recipe)?
    };
    if let (Some(cfg), Some(a)) = (adapter.as_mut(), recipe.adapter.as_ref()) {
        if cfg.peft_type == "LST" {
            // Deterministic, so a resumed run rebuilds the same side network shape.
            let rows = loader.loaders.iter().flat_map(|l| l.rows());
            crate::lst_init::init_side(
                &mut model,
                &source,
                &varmap,
                cfg,
                a,
                rows,
                t.seed,
                opts.progress,
            )?;
        }
    }
    // What checkpoints and final/ hold: an HF directory, or a PEFT adapter directory.
    let (weights_file, saved_files): (&str, Vec<(&str, String)>) = match &adapter {
        None => (
            "model.safetensors",
            vec![(
                "config.json",
                json_text(&source.config_json_for(DType::F32))?,
            )],
        ),
        Some(cfg) => (
            "adapter_model.safetensors",
            vec![("adapter_config.json", json_text(cfg)?)],
        ),
    };
    let mut opt = AdamW::new(&varmap, t.beta1, t.beta2, t.eps, t.weight_decay)?;

    // Output folder, resume.
    std::fs::create_dir_all(out).map_err(|e| TrainError::Io(format!("{}: {e}", out.display())))?;
    let metrics_path = out.join("metrics.jsonl");
    let mut state = TrainerState {
        step: 0,
        tokens: 0,
        epoch: 0,
        cursor: 0,
        seed: t.seed,
        tasks: Vec::new(),
    };
    let mut last_checkpoint = "none".to_string();
    if opts.resume {
        let (_, dir) = checkpoint::list(out).pop().ok_or_else(|| {
            TrainError::Io(format!(
                "{}: --resume: no checkpoint to resume from",
                out.display()
            ))
        })?;
        let ck = checkpoint::read(&dir)?;
        set_vars(&varmap, &ck.weights, &dir)?;
        opt.load_state(&ck.optimizer, ck.state.step)?;
        if ck.state.tasks.is_empty() {
            loader.seek(&[(ck.state.epoch, ck.state.cursor)]);
        } else {
            loader.seek(&ck.state.tasks);
        }
        state = ck.state;
        metrics::truncate_after(&metrics_path, state.step)?;
        last_checkpoint = dir.display().to_string();
    } else if metrics_path.exists() || !checkpoint::list(out).is_empty() {
        return Err(TrainError::Io(format!(
            "{}: holds an earlier run; use --resume or another --output",
            out.display()
        )));
    }
    let recipe_json = serde_json::to_value(recipe).map_err(|e| TrainError::Io(e.to_string()))?;
    let mut input_paths: Vec<&Path> = vec![recipe.model.path.as_path()];
    input_paths.extend(recipe.data.train.as_deref());
    input_paths.extend(recipe.data.eval.as_deref());
    for task in &recipe.data.tasks {
        input_paths.push(&task.train);
        input_paths.extend(task.eval.as_deref());
    }
    manifest::write(
        &out.join("manifest.json"),
        &recipe_json,
        manifest::inputs(&input_paths)?,
        t.seed,
        json!({"objective": objective.name(), "train_rows": loader.rows(), "tasks": loader.names,
               "skipped_bad_rows": bad_rows.errors.borrow().clone(), "eval_rows": eval_rows.len(),
               "preprocessing": preprocessing, "shard": recipe.data.shard,
               "resumed_from_step": state.step}),
    )?;
    let mut log = metrics::MetricsLog::open(&metrics_path)?;

    let bar = if opts.progress {
        indicatif::ProgressBar::new(t.steps as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps {msg} ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(state.step as u64);
    let (mut first_loss, mut last_loss) = (None, None);
    let start = std::time::Instant::now();
    let start_tokens = state.tokens;

    // Held-out evaluation with the current weights, when there is an eval set, and the
    // evaluation tasks' metrics.
    let tasks = crate::task_eval::TaskEval::open(&t.eval_tasks, t.eval_tasks_limit)?;
    let run_eval = |model: &Net| -> Result<Option<Eval>, TrainError> {
        if eval_rows.is_empty() && tasks.is_empty() {
            return Ok(None);
        }
        let (loss, mut metrics) = match eval_rows.is_empty() {
            true => (f64::NAN, Vec::new()),
            false => evaluate(
                model,
                reference.as_ref(),
                objective.as_ref(),
                &eval_rows,
                t.batch_size,
                &device,
            )?,
        };
        for (k, v) in tasks.run(model, &source)? {
            metrics.push((k, v.as_f64().unwrap_or(f64::NAN)));
        }
        Ok(Some((loss, metrics)))
    };
    for step in state.step..t.steps {
        let lr = schedule.lr(t.lr, step, t.steps, t.warmup_steps);
        let picked = loader.next(step, t.batch_size * t.grad_accum);
        let batches = picked
            .chunks(t.batch_size)
            .map(|rows| collate(rows, &device))
            .collect::<candle_core::Result<Vec<_>>>()?;

        let eval = if t.eval_every > 0 && step % t.eval_every == 0 {
            run_eval(&model)?
        } else {
            None
        };
        let step_out = optimizer_step(
            &model,
            reference.as_ref(),
            objective.as_ref(),
            &mut opt,
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
                checkpoint: last_checkpoint.clone(),
            },
            other => other,
        })?;
        let (loss, grad_norm, extra) = (step_out.loss, step_out.grad_norm, step_out.metrics);
        first_loss.get_or_insert(loss);
        last_loss = Some(loss);

        if step % t.log_every.max(1) == 0 || step + 1 == t.steps || eval.is_some() {
            let mut row = json!({"step": step, "loss": loss, "lr": lr, "tokens": state.tokens,
                "grad_norm": grad_norm, "epoch": loader.loaders[0].epoch});
            let elapsed = start.elapsed().as_secs_f64();
            if elapsed > 0.0 {
                row["tokens_per_second"] = json!((state.tokens - start_tokens) as f64 / elapsed);
            }
            for (k, v) in &extra {
                row[*k] = json!(v);
            }
            put_eval(&mut row, &eval);
            log.write(&row)?;
        }

        state.step = step + 1;
        state.tokens += batches.iter().map(|b| b.input_tokens as u64).sum::<u64>();
        let positions = loader.positions();
        (state.epoch, state.cursor) = positions[0];
        if positions.len() > 1 {
            state.tasks = positions;
        }
        bar.set_position(state.step as u64);
        bar.set_message(format!(
            "loss {loss:.4} | {:.0} tok/s",
            (state.tokens - start_tokens) as f64 / start.elapsed().as_secs_f64()
        ));

        if (t.save_every > 0 && state.step.is_multiple_of(t.save_every)) || state.step == t.steps {
            let weights = opt.weights().into_iter().collect();
            let optimizer = opt.state().into_iter().collect();
            let dir = checkpoint::write(
                out,
                &saved_files,
                weights_file,
                &weights,
                &optimizer,
                &state,
                t.keep_last,
            )?;
            last_checkpoint = dir.display().to_string();
        }
    }
    bar.finish_and_clear();

    let final_eval = run_eval(&model)?;
    if final_eval.is_some() {
        let mut row = json!({"step": t.steps, "tokens": state.tokens});
        put_eval(&mut row, &final_eval);
        log.write(&row)?;
    }
    let final_eval_loss = final_eval.map(|(e, _)| e).filter(|e| e.is_finite());
    let final_dir = out.join("final");
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)
            .map_err(|e| TrainError::Io(format!("{}: {e}", final_dir.display())))?;
    }
    let weights: std::collections::HashMap<String, Tensor> = opt
        .vars()
        .map(|(n, v)| (n.to_string(), v.as_tensor().clone()))
        .collect();
    match &adapter {
        None => {
            let files = source.tokenizer_files()?;
            graft_models::save::save_hf_dir(
                &final_dir,
                &source.config_json_for(dtype),
                &weights,
                &files,
            )?;
        }
        Some(cfg) => graft_adapters::peft_format::save(&final_dir, cfg, &weights)
            .map_err(|e| TrainError::Io(e.to_string()))?,
    }
    let title = format!(
        "{} — {}",
        objective.name(),
        recipe
            .model
            .path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    );
    metrics::plot(&metrics_path, &out.join("loss.png"), &title)?;
    Ok(TrainSummary {
        output: out.clone(),
        steps: t.steps,
        first_loss,
        last_loss,
        final_eval_loss,
    })
}
