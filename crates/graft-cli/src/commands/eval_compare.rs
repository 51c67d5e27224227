//! `graft eval --compare DIR…`: this run's metrics beside earlier runs' (their results.json), as
//! `comparison.md` and `comparison.png` in the output folder — before/after fine-tuning side by
//! side.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::io::write_atomic;

fn label(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| dir.display().to_string())
}

/// Writes the comparison of the runs in `earlier` and this run (`out`, results `now`); returns
/// the Markdown table.
pub fn write(earlier: &[PathBuf], out: &Path, now: &Value) -> Result<String> {
    let mut runs: Vec<(String, Value)> = Vec::new();
    for dir in earlier {
        let path = dir.join("results.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("--compare: {}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("--compare: {}: not JSON", path.display()))?;
        runs.push((label(dir), v));
    }
    runs.push((label(out), now.clone()));
    // Rows: this run's task/metric keys, in its order.
    let mut rows: Vec<(String, Vec<f64>)> = Vec::new();
    for (task, metrics) in now["results"].as_object().into_iter().flatten() {
        for (key, _) in metrics.as_object().into_iter().flatten() {
            if key.contains("_stderr,") || !key.contains(',') {
                continue;
            }
            let values = runs
                .iter()
                .map(|(_, r)| r["results"][task][key].as_f64().unwrap_or(f64::NAN))
                .collect();
            rows.push((format!("{task} {key}"), values));
        }
    }
    let names: Vec<String> = runs.iter().map(|r| r.0.clone()).collect();
    let mut md = format!(
        "| task / metric | {} |\n|---|{}\n",
        names.join(" | "),
        "---:|".repeat(names.len())
    );
    for (row, values) in &rows {
        let cells: Vec<String> = values
            .iter()
            .map(|v| {
                if v.is_finite() {
                    format!("{v:.4}")
                } else {
                    "–".into()
                }
            })
            .collect();
        md.push_str(&format!("| {row} | {} |\n", cells.join(" | ")));
    }
    write_atomic(&out.join("comparison.md"), md.as_bytes())?;
    graft_train::metrics::grouped_bars(&rows, &names, &out.join("comparison.png"), "graft eval")?;
    Ok(md)
}
