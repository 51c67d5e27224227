//! A task ready to run: its config, documents and the prompts lm-eval would build for them
//! (`api/task.py` `ConfigurableTask`: `fewshot_context`, `construct_requests`): the context is
//! description + few-shot turns (`question + target_delimiter + answer + fewshot_delimiter`)
//! + the document's text; few-shot examples are drawn per document, in document order, from one
//! `random.Random(1234)` per task (`sampler = "first_n"`: the first n of the pool). The evaluated
//! document is kept out of its own few-shot examples when the task's few-shot split is its test
//! split (as lm-eval compares them). `gen_prefix` starts the answer (`build_qa_turn`).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::hooks::Hook;
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
    /// Multiple inputs (winogrande): each choice completes the context and this is the one
    /// continuation scored after each.
    pub continuation: Option<String>,
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

/// How a task is opened: `num_fewshot` overrides the file's, `limit` keeps the first documents,
/// `datasets_dir` is the local mirror of hub datasets.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    pub num_fewshot: Option<usize>,
    pub limit: Option<usize>,
    pub datasets_dir: Option<PathBuf>,
}

/// lm-eval's `requires_delimiter`: neither side has whitespace at the join.
fn requires_delimiter(prefix: &str, suffix: &str) -> bool {
    !prefix.is_empty()
        && !prefix.ends_with(char::is_whitespace)
        && !suffix.starts_with(char::is_whitespace)
}

/// lm-eval's `maybe_delimit`: `prefix` + `suffix` with `delimiter` between unless one side has
/// whitespace at the join.
fn maybe_delimit(prefix: &str, suffix: &str, delimiter: &str) -> String {
    match (prefix.is_empty(), suffix.is_empty()) {
        (true, _) => suffix.into(),
        (_, true) => prefix.into(),
        _ if requires_delimiter(prefix, suffix) => format!("{prefix}{delimiter}{suffix}"),
        _ => format!("{prefix}{suffix}"),
    }
}

/// The task's `process_docs` (a native hook), applied to every split as lm-eval does.
fn process_docs(cfg: &TaskConfig, docs: &mut [Doc]) -> Result<(), String> {
    if cfg.hooks.contains(&crate::hooks::Hook::HellaswagDocs) {
        for (i, d) in docs.iter_mut().enumerate() {
            *d = crate::hooks::hellaswag_doc(d).map_err(|e| format!("document {i}: {e}"))?;
        }
    }
    Ok(())
}

/// How one turn is formatted: the evaluated document's settings or the few-shot overrides.
struct Format<'a> {
    text: &'a Option<Value>,
    target: &'a Option<Value>,
    choice: &'a Option<Value>,
    gen_prefix: Option<&'a str>,
    target_delimiter: &'a str,
    fewshot_delimiter: &'a str,
}

impl Task {
    /// Opens a task file and reads its documents and few-shot pool.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Self, EvalError> {
        let (cfg, dir) = TaskConfig::read(path)?;
        let shown = path.display().to_string();
        let at = |e: String| EvalError::Task(shown.clone(), e);
        let mirror = opts.datasets_dir.as_deref();
        let split = cfg.eval_split().map_err(at)?.to_string();
        let mut docs = read_docs(&cfg.split_files(&split, &dir, mirror).map_err(at)?, &shown)?;
        process_docs(&cfg, &mut docs).map_err(at)?;
        if let Some(n) = opts.limit {
            docs.truncate(n);
        }
        let num_fewshot = opts.num_fewshot.or(cfg.num_fewshot).unwrap_or(0);
        let fewshot_pool = match (num_fewshot, cfg.fewshot_samples(), cfg.fewshot_split()) {
            (0, ..) => Vec::new(),
            (_, Some(samples), _) => samples.to_vec(),
            (_, None, Some(s)) => {
                let mut pool = read_docs(&cfg.split_files(s, &dir, mirror).map_err(at)?, &shown)?;
                process_docs(&cfg, &mut pool).map_err(at)?;
                pool
            }
            (_, None, None) => {
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

    fn format(&self) -> Format<'_> {
        let c = &self.cfg;
        Format {
            text: &c.doc_to_text,
            target: &c.doc_to_target,
            choice: &c.doc_to_choice,
            gen_prefix: c.gen_prefix.as_deref(),
            target_delimiter: &c.target_delimiter,
            fewshot_delimiter: &c.fewshot_delimiter,
        }
    }

    /// The few-shot examples' format: `fewshot_config`'s overrides over the task's own.
    fn fewshot_format(&self) -> Format<'_> {
        let own = self.format();
        let Some(f) = &self.cfg.fewshot_config else {
            return own;
        };
        fn or<'a>(x: &'a Option<Value>, y: &'a Option<Value>) -> &'a Option<Value> {
            if x.is_some() {
                x
            } else {
                y
            }
        }
        Format {
            text: or(&f.doc_to_text, own.text),
            target: or(&f.doc_to_target, own.target),
            choice: or(&f.doc_to_choice, own.choice),
            gen_prefix: f.gen_prefix.as_deref().or(own.gen_prefix),
            target_delimiter: f
                .target_delimiter
                .as_deref()
                .unwrap_or(own.target_delimiter),
            fewshot_delimiter: f
                .fewshot_delimiter
                .as_deref()
                .unwrap_or(own.fewshot_delimiter),
        }
    }

    /// `gen_prefix` for `doc`: a field of the document, else a template.
    fn gen_prefix(&self, spec: Option<&str>, doc: &Doc) -> Result<Option<String>, String> {
        spec.map(|s| self.templates.text(&Some(Value::String(s.into())), doc))
            .transpose()
    }

    /// A document's answer text: the gold choice, the first of a list, or the target.
    fn answer(&self, f: &Format, doc: &Doc) -> Result<String, String> {
        let has_choices = f.choice.is_some();
        let target = self.templates.target(f.target, doc, has_choices)?;
        Ok(match (&target, has_choices) {
            (Value::Number(n), true) => {
                let choices = self.templates.choices(f.choice, doc)?;
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

    /// One few-shot turn as lm-eval's `build_qa_turn` renders it in plain text.
    fn fewshot_turn(&self, shot: &Doc) -> Result<String, String> {
        let f = self.fewshot_format();
        let q = self.templates.text(f.text, shot)?;
        let a = self.answer(&f, shot)?;
        let prefix = self.gen_prefix(f.gen_prefix, shot)?.unwrap_or_default();
        let delimit = match prefix.is_empty() {
            true => !a.is_empty(),
            false => requires_delimiter(&q, &prefix),
        };
        let mut turn = q;
        if delimit {
            turn.push_str(f.target_delimiter);
        }
        if !a.is_empty() {
            turn.push_str(&maybe_delimit(&prefix, &a, " "));
            turn.push_str(f.fewshot_delimiter);
        } else {
            turn.push_str(&prefix);
        }
        Ok(turn)
    }

    /// A winogrande few-shot example: the sentence completed with its right option, then the
    /// rest of the sentence (lm-eval's `q = c[q]` for multiple inputs).
    fn winogrande_turn(&self, shot: &Doc) -> Result<String, String> {
        let f = self.fewshot_format();
        let (gold, contexts, rest) = crate::hooks::winogrande(shot)?;
        let q = &contexts[gold];
        Ok(match rest.is_empty() {
            true => q.clone(),
            false => format!("{q}{}{rest}{}", f.target_delimiter, f.fewshot_delimiter),
        })
    }

    /// The evaluated document's turn: its text, then `gen_prefix` (delimited as lm-eval does).
    fn question_turn(&self, doc: &Doc) -> Result<String, String> {
        let f = self.format();
        let mut q = self.templates.text(f.text, doc)?;
        if let Some(prefix) = self
            .gen_prefix(f.gen_prefix, doc)?
            .filter(|p| !p.is_empty())
        {
            if requires_delimiter(&q, &prefix) {
                q.push_str(f.target_delimiter);
            }
            q.push_str(&prefix);
        }
        Ok(q)
    }

    /// The few-shot picks for one document (`rng` is the task's one draw sequence).
    fn picks(&self, rng: &mut PyRandom, doc: &Doc) -> Vec<usize> {
        let pool = &self.fewshot_pool;
        let n = self.num_fewshot;
        // lm-eval leaves the document out when the few-shot split is the test split.
        let exclude = self.cfg.explicit_fewshot_split() == self.cfg.test_split.as_deref();
        let sampler = self
            .cfg
            .fewshot_config
            .as_ref()
            .map_or("default", |f| f.sampler.as_str());
        match (sampler, exclude) {
            ("first_n", false) => (0..n).collect(),
            ("first_n", true) => (0..pool.len())
                .filter(|&j| pool[j] != *doc)
                .take(n)
                .collect(),
            (_, false) => rng.sample(pool.len(), n),
            (_, true) => {
                let mut p = rng.sample(pool.len(), n + 1);
                p.retain(|&j| pool[j] != *doc);
                p.truncate(n);
                if p.len() < n {
                    // Copies of the document were drawn: draw again from the pool without them.
                    let rest: Vec<usize> = (0..pool.len()).filter(|&j| pool[j] != *doc).collect();
                    p = rng
                        .sample(rest.len(), n)
                        .into_iter()
                        .map(|k| rest[k])
                        .collect();
                }
                p
            }
        }
    }

    /// The prompts of every document, in order (the few-shot draws depend on that order).
    pub fn prepare(&self) -> Result<Vec<Prepared>, EvalError> {
        let mut rng = PyRandom::new(FEWSHOT_SEED);
        let c = &self.cfg;
        let f = self.format();
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
                let winogrande = c.hooks.contains(&Hook::Winogrande);
                if self.num_fewshot > 0 {
                    for j in self.picks(&mut rng, doc) {
                        let shot = &self.fewshot_pool[j];
                        let turn = match winogrande {
                            true => self.winogrande_turn(shot),
                            false => self.fewshot_turn(shot),
                        };
                        context.push_str(&turn.map_err(at)?);
                    }
                }
                if winogrande {
                    // lm-eval's multiple inputs: each choice completes the context; the rest of
                    // the sentence is the one continuation.
                    let (gold, choices, rest) = crate::hooks::winogrande(doc).map_err(at)?;
                    return Ok(Prepared {
                        context,
                        choices,
                        target: Value::from(gold),
                        continuation: Some(rest),
                    });
                }
                context.push_str(&self.question_turn(doc).map_err(at)?);
                let choices = match f.choice.is_some() {
                    true => self.templates.choices(f.choice, doc).map_err(at)?,
                    false => Vec::new(),
                };
                let target = match c.output_type.as_str() {
                    "loglikelihood_rolling" | "generate_until" | "loglikelihood" => {
                        Value::String(self.answer(&f, doc).map_err(at)?)
                    }
                    _ => self.templates.target(f.target, doc, true).map_err(at)?,
                };
                Ok(Prepared {
                    context,
                    choices,
                    target,
                    continuation: None,
                })
            })
            .collect()
    }
}
