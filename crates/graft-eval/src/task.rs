//! A task ready to run: its config, documents and the prompts lm-eval would build for them
//! (`api/task.py` `ConfigurableTask`: `fewshot_context`, `construct_requests`): the context is
//! description + few-shot turns (`question + target_delimiter + answer + fewshot_delimiter`)
//! + the document's text; few-shot examples are drawn per document, in document order, from one
//! `random.Random(1234)` per task (`sampler = "first_n"`: the first n of the pool).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::lm_eval_yaml::TaskConfig;
use crate::prompt::Templates;
use crate::pyrandom::PyRandom;
use crate::EvalError;

/// lm-eval's default few-shot seed (`fewshot_random_seed`).
pub const FEWSHOT_SEED: u64 = 1234;

pub type Doc = Map<String, Value>;

pub struct Task {
    pub cfg: TaskConfig,
    pub source: PathBuf,
    pub docs: Vec<Doc>,
    pub fewshot_pool: Vec<Doc>,
    pub num_fewshot: usize,
    pub templates: Templates,
}

impl Task {
    /// Whether scoring this task runs the model's output as a program (pass@1).
    pub fn runs_code(&self) -> bool {
        self.cfg
            .metric_list
            .iter()
            .flatten()
            .any(|m| m.metric == "pass@1")
    }
}

/// Refuses tasks that would run generated code unless the user opted in (`how` names the
/// switch), as lm-eval refuses without `--confirm_run_unsafe_code`; with the opt-in, chooses
/// the sandbox now, so a machine that cannot cut the program off from the network fails
/// before the model loads (unless `allow_network`).
pub fn check_code_execution(
    tasks: &[Task],
    allowed: bool,
    allow_network: bool,
    how: &str,
) -> Result<(), String> {
    match tasks.iter().find(|t| t.runs_code()) {
        Some(t) if !allowed => Err(format!(
            "task `{}` runs the model's generated code (pass@1); allow it with {how} (graft runs it isolated: see the README)",
            t.cfg.task
        )),
        Some(t) => crate::code_exec::choose_sandbox(allow_network)
            .map(|_| ())
            .map_err(|e| format!("task `{}`: {e}", t.cfg.task)),
        None => Ok(()),
    }
}

/// One document's requests: the context and what is asked of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub context: String,
    /// Multiple choice: the choices (without the delimiter).
    pub choices: Vec<String>,
    /// An index into `choices`, or a string.
    pub target: Value,
}

fn read_docs(files: &[PathBuf], shown: &str) -> Result<Vec<Doc>, EvalError> {
    let mut docs = Vec::new();
    for f in files {
        let rows =
            graft_data::source::rows_iter(f).map_err(|e| EvalError::Task(shown.into(), e))?;
        for row in rows {
            docs.push(row.map_err(|e| EvalError::Task(shown.into(), e))?.1);
        }
    }
    Ok(docs)
}

impl Task {
    /// Opens a task file; `num_fewshot` overrides the file's; `limit` keeps the first documents.
    pub fn open(
        path: &Path,
        num_fewshot: Option<usize>,
        limit: Option<usize>,
    ) -> Result<Self, EvalError> {
        let (cfg, dir) = TaskConfig::read(path)?;
        let shown = path.display().to_string();
        let at = |e: String| EvalError::Task(shown.clone(), e);
        let split = cfg.eval_split().map_err(at)?.to_string();
        let mut docs = read_docs(&cfg.split_files(&split, &dir).map_err(at)?, &shown)?;
        if let Some(n) = limit {
            docs.truncate(n);
        }
        let num_fewshot = num_fewshot.or(cfg.num_fewshot).unwrap_or(0);
        let fewshot_pool = match (num_fewshot, cfg.fewshot_split()) {
            (0, _) => Vec::new(),
            (_, Some(s)) => read_docs(&cfg.split_files(s, &dir).map_err(at)?, &shown)?,
            (_, None) => {
                return Err(at(
                    "num_fewshot > 0 needs a fewshot_split or training_split".into(),
                ))
            }
        };
        if num_fewshot > fewshot_pool.len() && num_fewshot > 0 {
            return Err(at(format!(
                "num_fewshot {num_fewshot}: the few-shot split has only {} documents",
                fewshot_pool.len()
            )));
        }
        Ok(Self {
            cfg,
            source: path.to_path_buf(),
            docs,
            fewshot_pool,
            num_fewshot,
            templates: Templates::new(),
        })
    }

    fn has_choices(&self) -> bool {
        self.cfg.doc_to_choice.is_some()
    }

    /// A few-shot example's answer text: the gold choice, the first of a list, or the target.
    fn answer(&self, doc: &Doc) -> Result<String, String> {
        let target = self
            .templates
            .target(&self.cfg.doc_to_target, doc, self.has_choices())?;
        Ok(match (&target, self.has_choices()) {
            (Value::Number(n), true) => {
                let choices = self.templates.choices(&self.cfg.doc_to_choice, doc)?;
                let i = n.as_u64().unwrap_or(u64::MAX) as usize;
                choices
                    .get(i)
                    .cloned()
                    .ok_or_else(|| format!("target {i} is not a choice index"))?
            }
            (Value::Array(a), _) => a
                .first()
                .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
                .unwrap_or_default(),
            (Value::String(s), _) => s.clone(),
            (other, _) => other.to_string(),
        })
    }

    /// The prompts of every document, in order (the few-shot draws depend on that order).
    pub fn prepare(&self) -> Result<Vec<Prepared>, EvalError> {
        let mut rng = PyRandom::new(FEWSHOT_SEED);
        let sampler = self
            .cfg
            .fewshot_config
            .as_ref()
            .map_or("default", |f| f.sampler.as_str());
        let same_split = self.cfg.fewshot_split() == self.cfg.eval_split().ok();
        let c = &self.cfg;
        self.docs
            .iter()
            .enumerate()
            .map(|(i, doc)| {
                let at = |e: String| EvalError::Doc(self.source.display().to_string(), i, e);
                let mut context = match c.description.is_empty() {
                    true => String::new(),
                    false => self
                        .templates
                        .text(&Some(Value::String(c.description.clone())), doc)
                        .map_err(at)?,
                };
                if self.num_fewshot > 0 {
                    let picks: Vec<usize> = match sampler {
                        "first_n" => (0..self.num_fewshot).collect(),
                        _ if same_split => {
                            let mut p = rng.sample(self.fewshot_pool.len(), self.num_fewshot + 1);
                            p.retain(|&j| self.fewshot_pool[j] != *doc);
                            p.truncate(self.num_fewshot);
                            p
                        }
                        _ => rng.sample(self.fewshot_pool.len(), self.num_fewshot),
                    };
                    for j in picks {
                        let shot = &self.fewshot_pool[j];
                        let q = self.templates.text(&c.doc_to_text, shot).map_err(at)?;
                        let a = self.answer(shot).map_err(at)?;
                        context.push_str(&format!(
                            "{q}{}{a}{}",
                            c.target_delimiter, c.fewshot_delimiter
                        ));
                    }
                }
                context.push_str(&self.templates.text(&c.doc_to_text, doc).map_err(at)?);
                let choices = match self.has_choices() {
                    true => self.templates.choices(&c.doc_to_choice, doc).map_err(at)?,
                    false => Vec::new(),
                };
                let target = match c.output_type.as_str() {
                    "loglikelihood_rolling" | "generate_until" | "loglikelihood" => {
                        Value::String(self.answer(doc).map_err(at)?)
                    }
                    _ => self
                        .templates
                        .target(&c.doc_to_target, doc, true)
                        .map_err(at)?,
                };
                Ok(Prepared {
                    context,
                    choices,
                    target,
                })
            })
            .collect()
    }
}
