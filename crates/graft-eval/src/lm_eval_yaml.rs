//! lm-eval-harness task YAML (lm_eval 0.4 `TaskConfig`), the subset graft runs: local data through
//! `dataset_path: json | parquet` + `dataset_kwargs.data_files`, or a hub dataset
//! (`dataset_path` + `dataset_name`) from a local mirror (`mirror.rs`), Jinja `doc_to_text` /
//! `doc_to_target` / `doc_to_choice`, few-shot settings, `generation_kwargs`, `filter_list`,
//! `metric_list`, and `include` of a base file. A key graft does not run is an error naming it —
//! never silently ignored, since it would change the numbers.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::EvalError;

/// Keys that change nothing graft computes (descriptive or lm-eval bookkeeping).
const INERT: &[&str] = &[
    "tag",
    "group",
    "should_decontaminate",
    "doc_to_decontamination_query",
    "output_path",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    pub task: String,
    /// The name lm-eval's results show (`alias`).
    #[serde(default)]
    pub task_alias: Option<String>,
    pub dataset_path: String,
    #[serde(default)]
    pub dataset_name: Option<String>,
    #[serde(default)]
    pub dataset_kwargs: Option<DatasetKwargs>,
    #[serde(default)]
    pub training_split: Option<String>,
    #[serde(default)]
    pub validation_split: Option<String>,
    #[serde(default)]
    pub test_split: Option<String>,
    #[serde(default)]
    pub fewshot_split: Option<String>,
    /// lm-eval's default is `generate_until`.
    #[serde(default = "generate_until")]
    pub output_type: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub doc_to_text: Option<Value>,
    #[serde(default)]
    pub doc_to_target: Option<Value>,
    #[serde(default)]
    pub doc_to_choice: Option<Value>,
    #[serde(default = "space")]
    pub target_delimiter: String,
    #[serde(default = "blank_line")]
    pub fewshot_delimiter: String,
    #[serde(default)]
    pub num_fewshot: Option<usize>,
    #[serde(default)]
    pub fewshot_config: Option<FewshotConfig>,
    #[serde(default)]
    pub generation_kwargs: Option<Map<String, Value>>,
    #[serde(default)]
    pub filter_list: Option<Vec<FilterPipeline>>,
    #[serde(default)]
    pub metric_list: Option<Vec<MetricSpec>>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default)]
    pub repeats: Option<usize>,
    /// Text that starts the answer (lm-eval's `gen_prefix`): a doc field or a template.
    #[serde(default)]
    pub gen_prefix: Option<String>,
    /// lm-eval's Python hooks that graft replaces with native code (`hooks.rs`).
    #[serde(skip)]
    pub hooks: Vec<crate::hooks::Hook>,
}

fn generate_until() -> String {
    "generate_until".into()
}
fn space() -> String {
    " ".into()
}
fn blank_line() -> String {
    "\n\n".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatasetKwargs {
    /// A path, a list of paths, or split → path(s).
    #[serde(default)]
    pub data_files: Option<Value>,
    /// Whether `datasets` may run the dataset's loading script: graft never runs one; a local
    /// mirror holds the data files themselves.
    #[serde(default)]
    pub trust_remote_code: Option<bool>,
    /// The hub revision: a local mirror is whatever revision the user downloaded.
    #[serde(default)]
    pub revision: Option<String>,
}

/// Whether `dataset_path` names a local-file builder (`json`, `parquet`) rather than a dataset.
fn local_builder(path: &str) -> bool {
    ["json", "parquet"].contains(&path)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FewshotConfig {
    /// `default` (seeded random draws, lm-eval's `ContextSampler`) or `first_n`.
    #[serde(default = "default_sampler")]
    pub sampler: String,
    /// The few-shot pool written out in the task file (used when there is no few-shot split).
    #[serde(default)]
    pub samples: Option<Vec<Map<String, Value>>>,
    /// The few-shot split (overrides `fewshot_split`).
    #[serde(default)]
    pub split: Option<String>,
    /// Formatting of the few-shot examples, when it differs from the evaluated document's.
    #[serde(default)]
    pub doc_to_text: Option<Value>,
    #[serde(default)]
    pub doc_to_target: Option<Value>,
    #[serde(default)]
    pub doc_to_choice: Option<Value>,
    #[serde(default)]
    pub gen_prefix: Option<String>,
    #[serde(default)]
    pub target_delimiter: Option<String>,
    #[serde(default)]
    pub fewshot_delimiter: Option<String>,
}

fn default_sampler() -> String {
    "default".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilterPipeline {
    pub name: String,
    pub filter: Vec<FilterStep>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilterStep {
    pub function: String,
    #[serde(default)]
    pub regex_pattern: Option<String>,
    #[serde(default)]
    pub group_select: Option<i64>,
    #[serde(default)]
    pub fallback: Option<String>,
    /// `multi_choice_regex`: how the choices' texts are matched in the response.
    #[serde(default)]
    pub ignore_case: Option<bool>,
    #[serde(default)]
    pub ignore_punctuation: Option<bool>,
    #[serde(default)]
    pub regexes_to_ignore: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricSpec {
    pub metric: String,
    #[serde(default)]
    pub aggregation: Option<String>,
    #[serde(default)]
    pub higher_is_better: Option<bool>,
    /// Metric options (`ignore_case`, `ignore_punctuation`, `regexes_to_ignore`, …).
    #[serde(flatten)]
    pub options: Map<String, Value>,
}

impl TaskConfig {
    /// Reads a task file, merging an `include`d base (relative to the file) under it.
    pub fn read(path: &Path) -> Result<(Self, PathBuf), EvalError> {
        let shown = path.display().to_string();
        let mut map = read_map(path, 0)?;
        for key in INERT {
            map.remove(*key);
        }
        let hooks = take_hooks(&mut map).map_err(|e| EvalError::PythonHook(shown.clone(), e))?;
        let value = Value::Object(map);
        let cfg: TaskConfig = serde_json::from_value(value).map_err(|e| {
            let msg = e.to_string();
            match msg.strip_prefix("unknown field ") {
                Some(rest) => EvalError::Task(
                    shown.clone(),
                    format!(
                        "key {} is not supported by graft eval",
                        rest.split(',').next().unwrap_or(rest)
                    ),
                ),
                None => EvalError::Task(shown.clone(), msg),
            }
        })?;
        let cfg = TaskConfig { hooks, ..cfg };
        cfg.check().map_err(|e| EvalError::Task(shown, e))?;
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok((cfg, dir))
    }

    fn check(&self) -> Result<(), String> {
        if ![
            "multiple_choice",
            "loglikelihood",
            "loglikelihood_rolling",
            "generate_until",
        ]
        .contains(&self.output_type.as_str())
        {
            return Err(format!(
                "output_type: `{}` is not supported (multiple_choice, loglikelihood, loglikelihood_rolling, generate_until)",
                self.output_type
            ));
        }
        let data_files = self
            .dataset_kwargs
            .as_ref()
            .and_then(|k| k.data_files.as_ref());
        if local_builder(&self.dataset_path) && data_files.is_none() {
            return Err(format!(
                "dataset_kwargs.data_files: missing (`dataset_path: {}` reads local data files)",
                self.dataset_path
            ));
        }
        for (name, v) in [
            ("doc_to_text", &self.doc_to_text),
            ("doc_to_target", &self.doc_to_target),
            ("doc_to_choice", &self.doc_to_choice),
        ] {
            if let Some(Value::String(s)) = v {
                if s.trim_start().starts_with("!function") {
                    return Err(format!(
                        "{name}: Python functions (`!function`) are not supported"
                    ));
                }
            }
        }
        let native_choices = self.hooks.contains(&crate::hooks::Hook::Winogrande);
        if self.output_type == "multiple_choice" && self.doc_to_choice.is_none() && !native_choices
        {
            return Err("doc_to_choice: multiple_choice needs the choices".into());
        }
        if self.repeats.is_some_and(|r| r != 1) {
            return Err("repeats: only 1 is supported".into());
        }
        if let Some(f) = &self.fewshot_config {
            if !["default", "first_n"].contains(&f.sampler.as_str()) {
                return Err(format!(
                    "fewshot_config.sampler: `{}` is not supported (default, first_n)",
                    f.sampler
                ));
            }
        }
        Ok(())
    }

    /// The data files of `split`: `data_files` resolved against the task file's folder, then the
    /// working one; else the hub dataset's files in the local mirror `datasets_dir`.
    pub fn split_files(
        &self,
        split: &str,
        dir: &Path,
        datasets_dir: Option<&Path>,
    ) -> Result<Vec<PathBuf>, String> {
        let files = self
            .dataset_kwargs
            .as_ref()
            .and_then(|k| k.data_files.as_ref());
        let Some(files) = files else {
            return crate::mirror::resolve(
                datasets_dir,
                &self.dataset_path,
                self.dataset_name.as_deref(),
                split,
            );
        };
        let list = |v: &Value| -> Result<Vec<String>, String> {
            match v {
                Value::String(s) => Ok(vec![s.clone()]),
                Value::Array(a) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_string)
                            .ok_or("a path is not a string".to_string())
                    })
                    .collect(),
                _ => Err("expected a path or a list of paths".into()),
            }
        };
        let names = match files {
            Value::Object(m) => match m.get(split) {
                Some(v) => list(v)?,
                None => return Err(format!("data_files has no split `{split}`")),
            },
            // One file set: lm-eval (datasets) calls it `train`.
            other if split == "train" => list(other)?,
            _ => {
                return Err(format!(
                    "data_files has no split `{split}` (a single file set is `train`)"
                ))
            }
        };
        Ok(names
            .into_iter()
            .map(|n| {
                let p = PathBuf::from(&n);
                match p.is_relative() && dir.join(&p).exists() {
                    true => dir.join(p),
                    false => p,
                }
            })
            .collect())
    }

    /// The split evaluated: `test_split`, else `validation_split`.
    pub fn eval_split(&self) -> Result<&str, String> {
        self.test_split
            .as_deref()
            .or(self.validation_split.as_deref())
            .ok_or_else(|| "test_split / validation_split: give the split to evaluate".into())
    }

    /// The few-shot pool's split: `fewshot_config.split`, `fewshot_split`, else training,
    /// validation, test (lm-eval's order).
    pub fn fewshot_split(&self) -> Option<&str> {
        self.explicit_fewshot_split()
            .or(self.training_split.as_deref())
            .or(self.validation_split.as_deref())
            .or(self.test_split.as_deref())
    }

    /// The few-shot split the task file names (lm-eval's `fewshot_cfg.split`).
    pub fn explicit_fewshot_split(&self) -> Option<&str> {
        self.fewshot_config
            .as_ref()
            .and_then(|f| f.split.as_deref())
            .or(self.fewshot_split.as_deref())
    }

    /// The few-shot examples written in the task file, used when it names no few-shot split.
    pub fn fewshot_samples(&self) -> Option<&[Map<String, Value>]> {
        match self.explicit_fewshot_split() {
            Some(_) => None,
            None => self.fewshot_config.as_ref()?.samples.as_deref(),
        }
    }
}

fn read_map(path: &Path, depth: usize) -> Result<Map<String, Value>, EvalError> {
    let shown = path.display().to_string();
    if depth > 8 {
        return Err(EvalError::Task(shown, "include: nested too deeply".into()));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| EvalError::Task(shown.clone(), e.to_string()))?;
    let value: Value = match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text) {
        Ok(yaml) => {
            let yaml = mark_hooks(yaml);
            if let Some((key, tag)) = tagged(&yaml, "") {
                return Err(EvalError::PythonHook(
                    shown,
                    format!(
                        "{key}: `{tag}` (a Python function) is not supported; use a Jinja template"
                    ),
                ));
            }
            serde_json::to_value(yaml)
                .map_err(|e| EvalError::Task(shown.clone(), format!("cannot read: {e}")))?
        }
        // PyYAML, which lm-eval reads with, keeps the last of duplicate keys (lm-eval's own
        // kmmlu files repeat one); so does this reading, for files without tags.
        Err(e) if e.to_string().contains("duplicate entry") => serde_yaml_ng::from_str(&text)
            .map_err(|_| EvalError::Task(shown.clone(), format!("not valid YAML: {e}")))?,
        Err(e) => return Err(EvalError::Task(shown, format!("not valid YAML: {e}"))),
    };
    let Value::Object(mut map) = value else {
        return Err(EvalError::Task(
            shown,
            "expected a mapping of task keys".into(),
        ));
    };
    if let Some(inc) = map.remove("include") {
        let Some(name) = inc.as_str() else {
            return Err(EvalError::Task(
                shown,
                "include: expected a file name".into(),
            ));
        };
        let base_path = path.parent().unwrap_or(Path::new(".")).join(name);
        let mut base = read_map(&base_path, depth + 1)?;
        base.extend(map);
        map = base;
    }
    Ok(map)
}

/// The key that marks a top-level `key: !function module.name` until the task's name is known.
const HOOK: &str = "!function";

/// Top-level `!function` values become `{"!function": "module.name"}` markers (resolved by
/// `take_hooks` once includes are merged); tagged values anywhere else stay tagged (refused).
fn mark_hooks(yaml: serde_yaml_ng::Value) -> serde_yaml_ng::Value {
    use serde_yaml_ng::Value as Y;
    let Y::Mapping(m) = yaml else {
        return yaml;
    };
    Y::Mapping(
        m.into_iter()
            .map(|(k, v)| match v {
                Y::Tagged(t) if t.tag == HOOK && t.value.is_string() => {
                    let mut marker = serde_yaml_ng::Mapping::new();
                    marker.insert(Y::from(HOOK), t.value);
                    (k, Y::Mapping(marker))
                }
                v => (k, v),
            })
            .collect(),
    )
}

/// Replaces the hook markers with graft's native hooks; a hook graft has no native version of
/// is an error naming the key and the function.
fn take_hooks(map: &mut Map<String, Value>) -> Result<Vec<crate::hooks::Hook>, String> {
    let task = map
        .get("task")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let marked: Vec<(String, String)> = map
        .iter()
        .filter_map(|(k, v)| {
            let f = v.as_object()?.get(HOOK)?.as_str()?;
            Some((k.clone(), f.to_string()))
        })
        .collect();
    let mut hooks = Vec::new();
    for (key, function) in marked {
        match crate::hooks::find(&task, &key, &function) {
            Some(h) => {
                map.remove(&key);
                hooks.push(h);
            }
            None => {
                return Err(format!(
                    "{key}: `!function {function}` (a Python function) is not supported; use a Jinja template"
                ))
            }
        }
    }
    Ok(hooks)
}

/// The first YAML-tagged value (`!function utils.process_docs`) and its key path.
fn tagged(v: &serde_yaml_ng::Value, at: &str) -> Option<(String, String)> {
    use serde_yaml_ng::Value as Y;
    match v {
        Y::Tagged(t) => Some((at.to_string(), t.tag.to_string())),
        Y::Mapping(m) => m.iter().find_map(|(k, v)| {
            let k = k.as_str().unwrap_or("?");
            let path = if at.is_empty() {
                k.to_string()
            } else {
                format!("{at}.{k}")
            };
            tagged(v, &path)
        }),
        Y::Sequence(s) => s
            .iter()
            .enumerate()
            .find_map(|(i, v)| tagged(v, &format!("{at}[{i}]"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn duplicate_keys_keep_the_last_as_pyyaml_does() {
        // lm-eval's kmmlu/cot_hard/_cot_kmmlu_yaml repeats `regex_pattern` in one filter step.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.yaml");
        std::fs::write(
            &path,
            "task: t\ndataset_path: x/y\ntest_split: test\ndoc_to_text: q\ndoc_to_target: a\n\
             filter_list:\n  - name: get\n    filter:\n      - function: regex\n        \
             regex_pattern: first\n        regex_pattern: last\n",
        )
        .unwrap();
        let (cfg, _) = super::TaskConfig::read(&path).unwrap();
        let step = &cfg.filter_list.unwrap()[0].filter[0];
        assert_eq!(step.regex_pattern.as_deref(), Some("last"));
        // With a Python hook too, the file stays refused (and names the YAML problem).
        std::fs::write(&path, "task: t\nprocess_docs: !function u.f\ntask: u\n").unwrap();
        assert!(super::TaskConfig::read(&path).is_err());
    }
}
