//! lm-eval's output files: `results.json` (`results`, `configs`, `versions`, `n-shot`,
//! `higher_is_better`, `n-samples`, `config`, `date`; metric keys `"<metric>,<filter>"` and
//! `"<metric>_stderr,<filter>"`, a missing stderr as "N/A") and a `samples_<task>.jsonl` per task.

use serde_json::{json, Map, Value};

use crate::evaluate::TaskOutcome;
use crate::groups::{GroupRun, LeafResult};
use crate::task::Task;

pub struct RunInfo {
    pub model: String,
    pub adapter: Option<String>,
    pub limit: Option<usize>,
    pub date: f64,
}

/// The rows of the groups run (lm-eval's `results` / `groups` entries), in order.
pub fn group_rows(
    tasks: &[(&Task, &TaskOutcome)],
    groups: &[GroupRun],
) -> Result<Vec<(String, Map<String, Value>)>, String> {
    let leaves: Vec<LeafResult> = tasks
        .iter()
        .map(|(t, o)| LeafResult {
            name: &o.name,
            metrics: &o.metrics,
            size: t.docs.len(),
        })
        .collect();
    groups
        .iter()
        .map(|g| Ok((g.name.clone(), crate::groups::aggregate(g, &leaves)?)))
        .collect()
}

pub fn results_json(
    tasks: &[(&Task, &TaskOutcome)],
    groups: &[(GroupRun, Map<String, Value>)],
    info: &RunInfo,
) -> Value {
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
    let mut group_table = Map::new();
    let mut subtasks = Map::new();
    for (g, row) in groups {
        results.insert(g.name.clone(), Value::Object(row.clone()));
        group_table.insert(g.name.clone(), Value::Object(row.clone()));
        subtasks.insert(g.name.clone(), json!(g.children));
        // lm-eval writes a group's version as a string.
        let version = match &g.version {
            Value::Number(n) => json!(n.to_string()),
            other => other.clone(),
        };
        versions.insert(g.name.clone(), version);
        let first = tasks.iter().find(|(_, o)| g.leaves.contains(&o.name));
        nshot.insert(
            g.name.clone(),
            json!(first.map_or(0, |(t, _)| t.num_fewshot)),
        );
        let dirs: Map<String, Value> = g
            .aggregate
            .iter()
            .map(|a| {
                let hib = first
                    .and_then(|(_, o)| o.higher_is_better.get(&a.metric).cloned())
                    .unwrap_or(json!(true));
                (a.metric.clone(), hib)
            })
            .collect();
        hib.insert(g.name.clone(), Value::Object(dirs));
    }
    json!({
        "results": results,
        "groups": group_table,
        "group_subtasks": subtasks,
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
pub fn markdown(
    tasks: &[(&Task, &TaskOutcome)],
    groups: &[(GroupRun, Map<String, Value>)],
) -> String {
    let mut s = String::from(
        "| task | n-shot | metric | filter | value | stderr |\n|---|---:|---|---|---:|---:|\n",
    );
    for (g, row) in groups {
        for (key, value) in row {
            let (Some((metric, filter)), Some(v)) = (key.split_once(','), value.as_f64()) else {
                continue;
            };
            if metric.ends_with("_stderr") {
                continue;
            }
            let se = row
                .get(&format!("{metric}_stderr,{filter}"))
                .and_then(Value::as_f64)
                .map_or("N/A".to_string(), |x| format!("{x:.4}"));
            s.push_str(&format!(
                "| {} (group) | | {metric} | {filter} | {v:.4} | {se} |\n",
                g.name
            ));
        }
    }
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
