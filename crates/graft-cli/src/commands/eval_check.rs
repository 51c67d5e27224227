//! `graft eval-check`: which lm-eval task files graft runs, without a model. Each task is read
//! (includes resolved), its metrics, filters and generation settings checked and its templates
//! compiled; with a datasets mirror its data is read too. One TSV row per task file.

use std::path::PathBuf;

use anyhow::{bail, Result};
use graft_eval::{lm_eval_yaml::TaskConfig, EvalError, OpenOptions, Task, TaskIndex};

use crate::io::write_atomic;

#[derive(clap::Args, Debug)]
#[command(
    about = "Check lm-eval task files without a model: which ones graft runs, and why not",
    after_help = "Prints one row per task: file, task, status (ok | python: the file calls Python\n\
(`!function`), which graft never runs | refused: anything else, with the reason) and a summary.\n\
Without --tasks, every task and group under --include-path is checked. With --datasets-dir the\n\
data is read as well. Exits with 2 when a task named in --tasks is not ok.\n\n\
Example:\n  graft eval-check --include-path lm_eval/tasks --output lm_eval_tasks.tsv"
)]
pub struct Args {
    /// Task YAML files or task / tag / group names under --include-path (default: all of them).
    #[arg(long, value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// Folders of task YAML files (lm-eval's task tree works).
    #[arg(long)]
    pub include_path: Vec<PathBuf>,
    /// Local mirror of hub datasets (default: $GRAFT_DATASETS_DIR): also read each task's data.
    #[arg(long)]
    pub datasets_dir: Option<PathBuf>,
    /// Write the table to this TSV file instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// (status, reason) of one task file.
fn check_one(file: &std::path::Path, data: &Option<OpenOptions>) -> (&'static str, String) {
    let outcome = TaskConfig::read(file).and_then(|(cfg, _)| {
        graft_eval::check(&cfg).map_err(|e| EvalError::Task(file.display().to_string(), e))?;
        match data {
            Some(opts) => Task::open(file, opts).map(|_| ()),
            None => Ok(()),
        }
    });
    let shown = file.display().to_string();
    let reason = |e: &dyn std::fmt::Display| {
        let e = e.to_string();
        let e = e
            .strip_prefix(&format!("{shown}: "))
            .unwrap_or(&e)
            .to_string();
        e.replace(['\t', '\n'], " ")
    };
    match outcome {
        Ok(()) => ("ok", String::new()),
        Err(e @ EvalError::PythonHook(..)) => ("python", reason(&e)),
        Err(e) => ("refused", reason(&e)),
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.tasks.is_empty() && args.include_path.is_empty() {
        bail!("give --tasks, --include-path, or both");
    }
    let mut scan = Some(TaskIndex::scan(&args.include_path));
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for spec in &args.tasks {
        for f in super::eval::task_files(spec, &mut scan, &args.include_path)? {
            files.push((spec.clone(), f));
        }
    }
    let index = scan.unwrap_or_default();
    if args.tasks.is_empty() {
        files = index
            .tasks
            .iter()
            .map(|(name, f)| (name.clone(), f.clone()))
            .collect();
    }
    let data = super::eval::datasets_dir(&args.datasets_dir).map(|d| OpenOptions {
        datasets_dir: Some(d),
        ..Default::default()
    });
    let mut table = String::from("file\ttask\tstatus\treason\n");
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    let mut named_failed = false;
    for (name, file) in &files {
        let (status, reason) = check_one(file, &data);
        *counts.entry(status).or_default() += 1;
        named_failed |= status != "ok" && !args.tasks.is_empty();
        table.push_str(&format!("{}\t{name}\t{status}\t{reason}\n", file.display()));
    }
    if args.tasks.is_empty() {
        // Groups: `graft eval` runs their tasks and aggregates their rows.
        for (group, g) in &index.groups {
            *counts.entry("group").or_default() += 1;
            table.push_str(&format!(
                "{}\t{group}\tgroup\t{} members\n",
                g.file.display(),
                g.members.len() + g.inline
            ));
        }
    }
    match &args.output {
        Some(path) => {
            crate::io::claim_outputs(&[path], &[])?;
            write_atomic(path, table.as_bytes())?;
        }
        None => print!("{table}"),
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    eprintln!("{} tasks checked; {}", files.len(), summary.join(", "));
    if named_failed {
        bail!("some of the tasks named in --tasks cannot run (see the table)");
    }
    Ok(())
}
