//! lm-eval's task groups (`api/group.py` `Group.aggregate`): a group's row aggregates each
//! `aggregate_metric_list` metric over all its leaf tasks (nested groups and tags expanded) —
//! the mean weighted by each task's number of documents (`weight_by_size`, the default) or the
//! plain mean of the task means; its standard error pooled over the tasks (`pooled_sample_stderr`)
//! or, unweighted, `sqrt(Σ se²) / k`; "N/A" when a task has none. Filters not named are found
//! among the tasks' results.

use serde::Deserialize;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct AggMetric {
    pub metric: String,
    /// One filter name or a list; none: every filter the tasks report this metric under.
    #[serde(default)]
    pub filter_list: Option<Value>,
    #[serde(default = "yes")]
    pub weight_by_size: bool,
    #[serde(default = "mean")]
    pub aggregation: String,
}

fn yes() -> bool {
    true
}
fn mean() -> String {
    "mean".into()
}

/// A group as the run reports it.
#[derive(Debug, Clone)]
pub struct GroupRun {
    pub name: String,
    pub alias: Option<String>,
    /// Its direct members (tasks and groups), as lm-eval's `group_subtasks`.
    pub children: Vec<String>,
    /// Every task under it.
    pub leaves: Vec<String>,
    pub aggregate: Vec<AggMetric>,
    pub version: Value,
}

/// One task's results: metric → (filter, value, stderr), and its number of documents.
pub struct LeafResult<'a> {
    pub name: &'a str,
    pub metrics: &'a [(String, String, f64, Option<f64>)],
    pub size: usize,
}

fn pooled_stderr(stderrs: &[f64], sizes: &[f64]) -> Option<f64> {
    let total: f64 = sizes.iter().sum();
    let dof = total - sizes.len() as f64;
    let var: f64 = sizes
        .iter()
        .zip(stderrs)
        .map(|(n, se)| (n - 1.0) * se * se * n)
        .sum::<f64>()
        / dof;
    (dof > 0.0).then(|| (var / total).sqrt())
}

/// The group's row of lm-eval's `results` / `groups`.
pub fn aggregate(group: &GroupRun, leaves: &[LeafResult]) -> Result<Map<String, Value>, String> {
    let mut row = Map::new();
    row.insert(
        "alias".into(),
        json!(group.alias.as_deref().unwrap_or(&group.name)),
    );
    row.insert("name".into(), json!(group.name));
    if group.aggregate.is_empty() {
        return Ok(row);
    }
    let mine: Vec<&LeafResult> = leaves
        .iter()
        .filter(|l| group.leaves.iter().any(|n| n == l.name))
        .collect();
    row.insert(
        "sample_len".into(),
        json!(mine.iter().map(|l| l.size).sum::<usize>()),
    );
    let mut counts = Map::new();
    for agg in &group.aggregate {
        if agg.aggregation != "mean" {
            return Err(format!(
                "group `{}`: aggregation `{}` (lm-eval has only `mean`)",
                group.name, agg.aggregation
            ));
        }
        let filters: Vec<String> = match &agg.filter_list {
            Some(Value::String(f)) => vec![f.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect(),
            _ => {
                let mut f: Vec<String> = mine
                    .iter()
                    .flat_map(|l| l.metrics.iter())
                    .filter(|m| m.0 == agg.metric)
                    .map(|m| m.1.clone())
                    .collect();
                f.sort();
                f.dedup();
                f
            }
        };
        for filter in filters {
            let found: Vec<(f64, Option<f64>, f64)> = mine
                .iter()
                .filter_map(|l| {
                    l.metrics
                        .iter()
                        .find(|m| m.0 == agg.metric && m.1 == filter)
                        .map(|m| (m.2, m.3, l.size as f64))
                })
                .collect();
            if found.is_empty() {
                continue;
            }
            let sizes: Vec<f64> = found
                .iter()
                .map(|f| if agg.weight_by_size { f.2 } else { 1.0 })
                .collect();
            let value = found.iter().zip(&sizes).map(|(f, n)| f.0 * n).sum::<f64>()
                / sizes.iter().sum::<f64>();
            let stderrs: Option<Vec<f64>> = found.iter().map(|f| f.1).collect();
            let se = stderrs.and_then(|s| match agg.weight_by_size {
                true => pooled_stderr(&s, &found.iter().map(|f| f.2).collect::<Vec<_>>()),
                false => Some(s.iter().map(|x| x * x).sum::<f64>().sqrt() / s.len() as f64),
            });
            let key = format!("{},{filter}", agg.metric);
            row.insert(key.clone(), json!(value));
            row.insert(
                format!("{}_stderr,{filter}", agg.metric),
                se.map_or(json!("N/A"), |x| json!(x)),
            );
            counts.insert(
                key,
                json!(found.iter().map(|f| f.2 as usize).sum::<usize>()),
            );
        }
    }
    if !counts.is_empty() {
        row.insert("sample_count".into(), Value::Object(counts));
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(weight_by_size: bool) -> GroupRun {
        GroupRun {
            name: "g".into(),
            alias: None,
            children: vec!["a".into(), "b".into()],
            leaves: vec!["a".into(), "b".into()],
            aggregate: vec![AggMetric {
                metric: "acc".into(),
                filter_list: None,
                weight_by_size,
                aggregation: "mean".into(),
            }],
            version: Value::Null,
        }
    }

    #[test]
    fn weighted_unweighted_and_missing_stderr() {
        let a = [("acc".to_string(), "none".to_string(), 0.5, Some(0.5))];
        let b = [("acc".to_string(), "none".to_string(), 1.0, Some(0.0))];
        let leaves = [
            LeafResult {
                name: "a",
                metrics: &a,
                size: 2,
            },
            LeafResult {
                name: "b",
                metrics: &b,
                size: 4,
            },
        ];
        // lm-eval: Σ v·n / Σ n; pooled: sqrt(Σ (n-1)·se²·n / (Σn - k) / Σn).
        let row = aggregate(&group(true), &leaves).unwrap();
        assert!((row["acc,none"].as_f64().unwrap() - 5.0 / 6.0).abs() < 1e-15);
        let pooled = (0.5f64 / 4.0 / 6.0).sqrt();
        assert!((row["acc_stderr,none"].as_f64().unwrap() - pooled).abs() < 1e-15);
        assert_eq!(row["sample_count"]["acc,none"], 6);
        // Unweighted: the mean of means, sqrt(Σ se²) / k.
        let row = aggregate(&group(false), &leaves).unwrap();
        assert_eq!(row["acc,none"].as_f64(), Some(0.75));
        assert_eq!(row["acc_stderr,none"].as_f64(), Some(0.25));
        let b = [("acc".to_string(), "none".to_string(), 1.0, None)];
        let leaves = [
            LeafResult {
                name: "a",
                metrics: &a,
                size: 2,
            },
            LeafResult {
                name: "b",
                metrics: &b,
                size: 4,
            },
        ];
        assert_eq!(
            aggregate(&group(true), &leaves).unwrap()["acc_stderr,none"],
            "N/A"
        );
    }
}
