//! Recipes: the TOML of DESIGN.md's recipe contract, with `--set key.path=value` overrides applied
//! before parsing. Unknown keys are errors (a misspelt `learning_rate` must not silently do nothing).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use graft_data::rows::DataSection;

use crate::TrainError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub model: ModelSection,
    pub data: DataSection,
    pub objective: toml::Table,
    /// Parameter-efficient training: the base stays frozen, only the adapter trains.
    #[serde(default)]
    pub adapter: Option<AdapterSection>,
    /// The frozen reference of preference objectives (default: the starting model).
    #[serde(default)]
    pub reference: Option<crate::reference::ReferenceSection>,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub path: PathBuf,
    #[serde(default = "f32")]
    pub dtype: String,
    /// A frozen quantized base (QLoRA; needs `[adapter]`): `true` keeps a GGUF file's quantized
    /// weights as stored; `"nf4"` quantizes an HF model's linear weights to NF4 with double
    /// quantization (bitsandbytes' QLoRA setting), `"nf4-no-dq"` without.
    #[serde(default)]
    pub quantized: QuantizedSetting,
    /// Overrides the config's `attention_dropout` for training.
    #[serde(default)]
    pub attention_dropout: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum QuantizedSetting {
    #[default]
    Off,
    Flag(bool),
    Kind(String),
}

impl QuantizedSetting {
    pub fn quantization(&self) -> Result<graft_models::Quantization, String> {
        use graft_models::Quantization;
        match self {
            Self::Off | Self::Flag(false) => Ok(Quantization::None),
            Self::Flag(true) => Ok(Quantization::Stored),
            Self::Kind(k) => match k.as_str() {
                "nf4" => Ok(Quantization::Nf4 { double_quant: true }),
                "nf4-no-dq" => Ok(Quantization::Nf4 {
                    double_quant: false,
                }),
                other => Err(format!(
                    "model.quantized: `{other}` is not known (true, \"nf4\", \"nf4-no-dq\")"
                )),
            },
        }
    }
}

fn f32() -> String {
    "f32".into()
}

/// `[adapter] kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    Lora,
    Dora,
    Sltrain,
    Mtlora,
    Lst,
}

impl AdapterKind {
    /// The `peft_type` the adapter is saved under, and PEFT's `use_dora`.
    pub fn peft_type(self) -> (graft_adapters::PeftType, bool) {
        use graft_adapters::PeftType;
        match self {
            AdapterKind::Lora => (PeftType::Lora, false),
            AdapterKind::Dora => (PeftType::Lora, true),
            AdapterKind::Sltrain => (PeftType::Sltrain, false),
            AdapterKind::Mtlora => (PeftType::Mtlora, false),
            AdapterKind::Lst => (PeftType::Lst, false),
        }
    }
}

/// `[adapter]`: DESIGN's recipe keys, mapped onto PEFT's LoraConfig fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterSection {
    /// `lora`, `dora`, `sltrain` (pretraining: low-rank + sparse weights, the base weight unused)
    /// `mtlora` (shared + per-task updates over `[[data.tasks]]`) or `lst` (a ladder side network
    /// on a frozen backbone).
    pub kind: AdapterKind,
    #[serde(default = "sixteen")]
    pub r: usize,
    #[serde(default = "thirty_two")]
    pub alpha: f64,
    #[serde(default)]
    pub dropout: f64,
    /// Module-name suffixes, or `"all-linear"`.
    pub target_modules: toml::Value,
    #[serde(default)]
    pub layers_to_transform: Option<Vec<usize>>,
    #[serde(default)]
    pub rslora: bool,
    /// Modules trained in full beside the adapter (PEFT's `modules_to_save`), e.g.
    /// ["embed_tokens", "lm_head"] when adapting a vocabulary.
    #[serde(default)]
    pub modules_to_save: Vec<String>,
    /// `kind = "sltrain"`: the density δ of the fixed-support sparse part (default 0.03).
    #[serde(default)]
    pub density: Option<f64>,
    /// `kind = "mtlora"`: the rank of each task-specific update (default 4) and the layers that
    /// get them (default: the last of each quarter of the stack); tasks are `[[data.tasks]]`.
    #[serde(default)]
    pub task_r: Option<usize>,
    #[serde(default)]
    pub task_layers: Option<Vec<usize>>,
    /// `kind = "lst"`: the side network's reduction factor (default 8, the authors'), its
    /// start — `"fisher"` (pruned by the empirical Fisher over `fisher_samples` training rows,
    /// default 1024; the authors' default), `"magnitude"` (pruned by |W|) or `"random"` — and the
    /// backbone layers it taps (default all; fewer = the authors' layer dropping).
    #[serde(default)]
    pub reduction: Option<usize>,
    #[serde(default)]
    pub side_init: Option<String>,
    #[serde(default)]
    pub fisher_samples: Option<usize>,
    #[serde(default)]
    pub side_layers: Option<Vec<usize>>,
}

impl AdapterSection {
    /// The recipe's `[adapter]` as PEFT's LoraConfig (so final/ loads in `peft`).
    pub fn peft_config(
        &self,
        base: &Path,
        seq2seq: bool,
        tasks: &[String],
    ) -> Result<graft_adapters::LoraConfig, TrainError> {
        let a = self;
        let task_type = if seq2seq { "SEQ_2_SEQ_LM" } else { "CAUSAL_LM" };
        let (peft_type, use_dora) = a.kind.peft_type();
        if (a.task_r.is_some() || a.task_layers.is_some()) && a.kind != AdapterKind::Mtlora {
            return Err(TrainError::Recipe(
                "adapter.task_r / task_layers: only for kind = \"mtlora\"".into(),
            ));
        }
        if a.kind == AdapterKind::Mtlora && tasks.is_empty() {
            return Err(TrainError::Recipe(
                "adapter.kind = \"mtlora\": needs [[data.tasks]] (its tasks)".into(),
            ));
        }
        if a.density.is_some() && a.kind != AdapterKind::Sltrain {
            return Err(TrainError::Recipe(
                "adapter.density: only for kind = \"sltrain\"".into(),
            ));
        }
        let target: Value = serde_json::to_value(&a.target_modules)
            .map_err(|e| TrainError::Recipe(e.to_string()))?;
        serde_json::from_value(serde_json::json!({
        "peft_type": peft_type, "task_type": task_type, "r": a.r, "lora_alpha": a.alpha,
        "lora_dropout": a.dropout, "target_modules": target, "layers_to_transform": a.layers_to_transform,
        "use_rslora": a.rslora, "use_dora": use_dora,
        "modules_to_save": if a.modules_to_save.is_empty() { Value::Null } else { json!(a.modules_to_save) }, "bias": "none", "fan_in_fan_out": false,
        "init_lora_weights": true, "inference_mode": true, "base_model_name_or_path": base,
    }))
    .map(|mut c: graft_adapters::LoraConfig| {
        let extra = &mut c.other;
        match a.kind {
            AdapterKind::Lora | AdapterKind::Dora => {}
            AdapterKind::Sltrain => {
                extra.insert("sparse_density".into(), json!(a.density.unwrap_or(0.03)));
                extra.insert("sparse_seed".into(), json!(0));
            }
            AdapterKind::Lst => {
                extra.insert("reduction".into(), json!(a.reduction.unwrap_or(8)));
                if let Some(l) = &a.side_layers {
                    extra.insert("side_layers".into(), json!(l));
                }
                extra.insert("gate_temperature".into(), json!(graft_adapters::lst::TEMPERATURE));
            }
            AdapterKind::Mtlora => {
                extra.insert("task_names".into(), json!(tasks));
                extra.insert("task_r".into(), json!(a.task_r.unwrap_or(4)));
                if let Some(l) = &a.task_layers {
                    extra.insert("task_layers".into(), json!(l));
                }
            }
        }
        c
    })
    .map_err(|e| TrainError::Recipe(format!("adapter: {e}")))
    }
}

fn sixteen() -> usize {
    16
}
fn thirty_two() -> f64 {
    32.0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    pub steps: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub lr: f64,
    pub schedule: String,
    pub warmup_steps: usize,
    /// For `schedule = "wsd"`: the final fraction of steps that anneals to 0.
    pub decay_fraction: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub max_grad_norm: Option<f64>,
    pub seed: u64,
    pub log_every: usize,
    pub save_every: usize,
    pub eval_every: usize,
    /// Checkpoints kept (oldest removed first); 0 keeps all.
    pub keep_last: usize,
    /// Activation checkpointing: keep each decoder block's input only and recompute the block in
    /// the backward (less memory, one more forward).
    pub checkpointing: bool,
    /// Evaluation tasks (lm-eval task YAML files or graft's built-in tasks) run every
    /// `eval_every` steps and at the end, their metrics logged as `<task>/<metric>,<filter>`.
    pub eval_tasks: Vec<String>,
    /// Documents per evaluation task (all when absent).
    pub eval_tasks_limit: Option<usize>,
    /// Allows `eval_tasks` scored by running the model's code (pass@1).
    pub eval_allow_code_execution: bool,
    /// Runs that code even where nothing can cut it off from the network.
    pub eval_allow_network: bool,
    /// Variables to train, as parts of their names (`["embed_tokens", "lm_head"]`: Bllossom's
    /// and Glot500's embeddings-only stage); empty trains every variable.
    pub trainable: Vec<String>,
    /// Train only the embedding and head rows `graft vocab extend` added (the config's
    /// `graft_vocab_extended_from` says where they start); the old rows stay bit-identical.
    pub new_rows_only: bool,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            steps: 100,
            batch_size: 8,
            grad_accum: 1,
            lr: 2e-5,
            schedule: "cosine".into(),
            warmup_steps: 0,
            decay_fraction: 0.1,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            max_grad_norm: Some(1.0),
            seed: 0,
            log_every: 10,
            save_every: 500,
            eval_every: 200,
            keep_last: 2,
            checkpointing: false,
            eval_tasks: Vec::new(),
            eval_tasks_limit: None,
            eval_allow_code_execution: false,
            eval_allow_network: false,
            trainable: Vec::new(),
            new_rows_only: false,
        }
    }
}

/// Parses a `--set` value as TOML (numbers, booleans, arrays, quoted strings), else as a bare string.
fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

/// Reads `path`, applies `key.path=value` overrides, and resolves relative paths against the recipe's
/// folder. Errors name the file and the key.
pub fn load(path: &Path, overrides: &[String]) -> Result<Recipe, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut table: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: invalid TOML: {e}", path.display()))?;
    apply_overrides(&mut table, overrides)?;
    let mut recipe: Recipe =
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                format!("{}: {}{}", path.display(), e.message(), hint(e.message()))
            })?;
    resolve_paths(&mut recipe, path.parent().unwrap_or(Path::new(".")));
    validate(&recipe).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(recipe)
}

/// Where the keys users bring from other tools (transformers' TrainingArguments, TRL, PEFT) are
/// set in a recipe, for an "unknown field" error.
fn hint(message: &str) -> String {
    let Some(key) = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next())
    else {
        return String::new();
    };
    let to = match key {
        "learning_rate" => "[train] lr",
        "epochs" | "num_epochs" | "num_train_epochs" | "max_steps" => {
            "[train] steps (optimizer steps)"
        }
        "per_device_train_batch_size" | "train_batch_size" => "[train] batch_size",
        "gradient_accumulation_steps" => "[train] grad_accum",
        "max_length" | "max_len" | "seq_len" | "max_seq_length" | "block_size" => {
            "[data] max_seq_len"
        }
        "lora_r" | "rank" => "[adapter] r",
        "lora_alpha" => "[adapter] alpha",
        "lora_dropout" => "[adapter] dropout",
        "model_name_or_path" | "name" | "model" => "[model] path",
        "dataset" | "train_file" | "data" => "[data] train",
        "eval_file" | "validation_file" => "[data] eval",
        "warmup_ratio" => "[train] warmup_steps",
        "lr_scheduler_type" | "scheduler" => "[train] schedule",
        "beta" | "loss_type" => "[objective] (e.g. kind = \"dpo\", beta = 0.1)",
        "ref_model" | "reference" => "[reference] path",
        "output_dir" => "output (top level) or --output",
        _ => return String::new(),
    };
    format!(" (graft sets this as {to})")
}

/// `--set a.b=value`: sets key `b` of table `a` (created when missing).
fn apply_overrides(table: &mut toml::Table, overrides: &[String]) -> Result<(), String> {
    for o in overrides {
        let (key, value) = o
            .split_once('=')
            .ok_or(format!("--set {o}: expected key=value"))?;
        let mut node = &mut *table;
        let parts: Vec<&str> = key.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            node = node
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(Default::default()))
                .as_table_mut()
                .ok_or(format!("--set {key}: `{part}` is not a table"))?;
        }
        node.insert(parts[parts.len() - 1].to_string(), parse_value(value));
    }
    Ok(())
}

/// Relative paths that do not exist from the working directory are taken from the recipe's folder.
fn resolve_paths(recipe: &mut Recipe, base: &Path) {
    let resolve = |p: &mut PathBuf| {
        if p.is_relative() && !p.exists() && base.join(&*p).exists() {
            *p = base.join(&*p);
        }
    };
    resolve(&mut recipe.model.path);
    let data = &mut recipe.data;
    for p in data.train.iter_mut().chain(data.eval.iter_mut()) {
        resolve(p);
    }
    for task in data.tasks.iter_mut() {
        resolve(&mut task.train);
        if let Some(e) = task.eval.as_mut() {
            resolve(e);
        }
    }
    if let Some(r) = recipe.reference.as_mut() {
        r.path.iter_mut().chain(r.soup.iter_mut()).for_each(resolve);
    }
}

/// Checks across sections that serde cannot express.
fn validate(recipe: &Recipe) -> Result<(), String> {
    match (&recipe.data.train, recipe.data.tasks.is_empty()) {
        (Some(_), false) => return Err("data: give `train` or `[[data.tasks]]`, not both".into()),
        (None, true) => return Err("data: missing `train` (or `[[data.tasks]]`)".into()),
        _ => {}
    }
    if recipe.data.mixture.is_some() && recipe.data.tasks.is_empty() {
        return Err("data.mixture: needs `[[data.tasks]]`".into());
    }
    let t = &recipe.train;
    if t.steps == 0 || t.batch_size == 0 || t.grad_accum == 0 {
        return Err("train.steps, train.batch_size and train.grad_accum must be ≥ 1".into());
    }
    if let Some([i, n]) = recipe.data.shard {
        if n == 0 || i >= n {
            return Err(format!(
                "data.shard: [{i}, {n}] does not exist (index < count)"
            ));
        }
    }
    if recipe.data.max_seq_len < 2 {
        return Err("data.max_seq_len must be ≥ 2".into());
    }
    check_ranges(recipe)
}

/// Every numeric setting in its range, so a typo fails at load, not as NaNs mid-run.
fn check_ranges(recipe: &Recipe) -> Result<(), String> {
    let t = &recipe.train;
    let finite_min = |key: &str, v: f64, min: f64| match v.is_finite() && v >= min {
        true => Ok(()),
        false => Err(format!("{key}: must be finite and ≥ {min}, got {v}")),
    };
    let unit = |key: &str, v: f64| match (0.0..1.0).contains(&v) {
        true => Ok(()),
        false => Err(format!("{key}: must be in [0, 1), got {v}")),
    };
    finite_min("train.lr", t.lr, 0.0)?;
    finite_min("train.weight_decay", t.weight_decay, 0.0)?;
    unit("train.beta1", t.beta1)?;
    unit("train.beta2", t.beta2)?;
    if !(t.eps.is_finite() && t.eps > 0.0) {
        return Err(format!("train.eps: must be finite and > 0, got {}", t.eps));
    }
    if let Some(g) = t.max_grad_norm.filter(|g| !(g.is_finite() && *g > 0.0)) {
        return Err(format!(
            "train.max_grad_norm: must be finite and > 0, got {g}"
        ));
    }
    if t.warmup_steps > t.steps {
        return Err(format!(
            "train.warmup_steps: {} is more than train.steps = {}",
            t.warmup_steps, t.steps
        ));
    }
    if t.batch_size.checked_mul(t.grad_accum).is_none() {
        return Err("train.batch_size × train.grad_accum: too large".into());
    }
    if let Some(p) = recipe.model.attention_dropout {
        unit("model.attention_dropout", p)?;
    }
    if let Some(a) = &recipe.adapter {
        unit("adapter.dropout", a.dropout)?;
        if a.r == 0 || a.reduction == Some(0) || a.task_r == Some(0) {
            return Err("adapter.r, reduction and task_r: must be ≥ 1".into());
        }
    }
    if let Some(s) = &recipe.data.span_corruption {
        if !(s.noise_density > 0.0 && s.noise_density < 1.0) {
            return Err(format!(
                "data.span_corruption.noise_density: must be in (0, 1), got {}",
                s.noise_density
            ));
        }
        finite_min(
            "data.span_corruption.mean_noise_span_length",
            s.mean_noise_span_length,
            1.0,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_settings_out_of_range_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.toml");
        std::fs::write(&path, "[model]\npath = \"m\"\n[data]\ntrain = \"t.jsonl\"\n[objective]\nkind = \"sft\"\n[train]\nsteps = 5\n").unwrap();
        assert!(load(&path, &[]).is_ok());
        for (set, key) in [
            ("train.lr=-1e-4", "train.lr"),
            ("train.lr=nan", "train.lr"),
            ("train.beta2=1.0", "train.beta2"),
            ("train.eps=0", "train.eps"),
            ("train.weight_decay=-0.1", "train.weight_decay"),
            ("train.max_grad_norm=0", "train.max_grad_norm"),
            ("train.warmup_steps=6", "train.warmup_steps"),
            ("model.attention_dropout=1.0", "model.attention_dropout"),
            (
                "adapter={kind=\"lst\", reduction=0, target_modules=[]}",
                "reduction",
            ),
            ("data.span_corruption={noise_density=1.5}", "noise_density"),
            (
                "data.span_corruption={mean_noise_span_length=0.5}",
                "mean_noise_span_length",
            ),
        ] {
            let e = load(&path, &[set.to_string()]).unwrap_err();
            assert!(e.contains(key) && e.contains("r.toml"), "{set}: {e}");
        }
    }

    #[test]
    fn keys_from_other_tools_get_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.toml");
        std::fs::write(&path, "[model]\npath = \"m\"\n[data]\ntrain = \"t.jsonl\"\n[objective]\nkind = \"sft\"\n[train]\nlearning_rate = 1e-4\n").unwrap();
        let e = load(&path, &[]).unwrap_err();
        assert!(
            e.contains("learning_rate") && e.contains("[train] lr"),
            "{e}"
        );
    }

    #[test]
    fn overrides_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.toml");
        std::fs::write(&path, "[model]\npath = \"m\"\n[data]\ntrain = \"t.jsonl\"\n[objective]\nkind = \"sft\"\n[train]\nsteps = 5\n").unwrap();
        let r = load(
            &path,
            &[
                "train.lr=0.001".into(),
                "objective.z_loss=1e-4".into(),
                "output=\"runs/x\"".into(),
            ],
        )
        .unwrap();
        assert_eq!(r.train.lr, 0.001);
        assert_eq!(r.train.steps, 5);
        assert_eq!(r.objective["z_loss"].as_float(), Some(1e-4));
        assert_eq!(r.output, Some(PathBuf::from("runs/x")));
        let e = load(&path, &["train.learning_rate=1".into()]).unwrap_err();
        assert!(e.contains("learning_rate") && e.contains("r.toml"), "{e}");
    }
}
