//! lm-eval's output files: `results.json` (`results`, `configs`, `versions`, `n-shot`,
//! `higher_is_better`, `n-samples`, `config`, `date`; metric keys `"<metric>,<filter>"` and
//! `"<metric>_stderr,<filter>"`, a missing stderr as "N/A") and a `samples_<task>.jsonl` per task.

use serde_json::{json, Map, Value};

use crate::evaluate::TaskOutcome;
use crate::task::Task;

pub struct RunInfo {
    pub model: String,
    pub adapter: Option<String>,
    pub limit: Option<usize>,
    pub date: f64,
}

pub fn results_json(tasks: &[(&Task, &TaskOutcome)], info: &RunInfo) -> Value {
    let mut results = Map::new();
    let mut configs = Map::new();
    let mut versions = Map::new();
    let mut nshot = Map::new();
    let mut hib = Map::new();
    let mut nsamples = Map::new();
    for (task, out) in tasks {
        let mut r = Map::new();
        r.insert("name".into(), json!(out.name));
        let alias = task.cfg.task_alias.as_deref().unwrap_or(&out.name);
        r.insert("alias".into(), json!(alias));
        r.insert("sample_len".into(), json!(task.docs.len()));
        for (metric, filter, value, se) in &out.metrics {
            r.insert(format!("{metric},{filter}"), json!(value));
            r.insert(
                format!("{metric}_stderr,{filter}"),
                se.map_or(json!("N/A"), |s| json!(s)),
            );
        }
        results.insert(out.name.clone(), Value::Object(r));
        let mut cfg = serde_json::to_value(&task.cfg).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut cfg {
            m.retain(|_, v| !v.is_null());
            m.insert("num_fewshot".into(), json!(task.num_fewshot));
        }
        configs.insert(out.name.clone(), cfg);
        let version = task
            .cfg
            .metadata
            .as_ref()
            .and_then(|m| m.get("version").cloned())
            .unwrap_or(Value::Null);
        versions.insert(out.name.clone(), version);
        nshot.insert(out.name.clone(), json!(task.num_fewshot));
        hib.insert(
            out.name.clone(),
            Value::Object(out.higher_is_better.clone()),
        );
        nsamples.insert(
            out.name.clone(),
            json!({"original": task.docs.len(), "effective": task.docs.len()}),
        );
    }
    json!({
        "results": results,
        "configs": configs,
        "versions": versions,
        "n-shot": nshot,
        "higher_is_better": hib,
        "n-samples": nsamples,
        "config": {"model": "graft", "model_args": {"pretrained": info.model, "adapter": info.adapter},
                   "batch_size": "1", "device": "cpu", "limit": info.limit,
                   "fewshot_seed": crate::task::FEWSHOT_SEED},
        "date": info.date,
        "graft_version": env!("CARGO_PKG_VERSION"),
    })
}

/// The metrics as a Markdown table (task, n-shot, metric, filter, value, stderr), as lm-eval
/// prints its summary.
pub fn markdown(tasks: &[(&Task, &TaskOutcome)]) -> String {
    let mut s = String::from(
        "| task | n-shot | metric | filter | value | stderr |\n|---|---:|---|---|---:|---:|\n",
    );
    for (task, out) in tasks {
        for (metric, filter, value, se) in &out.metrics {
            let se = se.map_or("N/A".to_string(), |x| format!("{x:.4}"));
            s.push_str(&format!(
                "| {} | {} | {metric} | {filter} | {value:.4} | {se} |\n",
                out.name, task.num_fewshot
            ));
        }
    }
    s
}
