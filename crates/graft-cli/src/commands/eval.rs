//! `graft eval`: lm-eval-harness tasks (task YAML files, or built-in tasks) on a model, written as
//! lm-eval writes them: `results.json` and `samples_<task>.jsonl`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use graft_eval::{builtin, groups::GroupRun, results, Lm, OpenOptions, Task, TaskIndex};

use crate::io::{progress, write_atomic, ModelArgs};

#[derive(clap::Args, Debug)]
#[command(
    about = "Evaluate a model on lm-eval-harness tasks (task YAML or built-in)",
    after_help = "Tasks: lm-eval task YAML files, task names, tags or groups found under --include-path\n\
(lm-eval's own task tree works), or built-in tasks (austen_bpb: bits per byte on bundled held-out\n\
prose). Data: `dataset_path: json | parquet` with dataset_kwargs.data_files (relative to the YAML\n\
file or the working directory), or a hub dataset (`dataset_path: allenai/ai2_arc`) read from a\n\
local mirror: --datasets-dir DIR (or GRAFT_DATASETS_DIR) holding\n\
DIR/<dataset_path>/[<dataset_name>/]<split>-*.parquet as a hub download has it. Output:\n\
DIR/results.json (lm-eval's layout: results, configs, versions, n-shot, n-samples, …) and\n\
DIR/samples_<task>.jsonl. `graft eval-check` checks task files without a model.\n\n\
Examples:\n  graft eval --model SmolLM2-135M-Instruct.Q8_0.gguf --tasks austen_bpb,my_task.yaml --limit 100 --output eval/\n  \
graft eval --model smollm2-hf --include-path lm_eval/tasks --datasets-dir ~/datasets --tasks arc_easy,gsm8k --output eval/"
)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Comma-separated task YAML files, task names / tags / groups under --include-path, and/or
    /// built-in task names.
    #[arg(long, value_delimiter = ',', required = true)]
    pub tasks: Vec<String>,
    /// Folders of task YAML files whose tasks --tasks may name (lm-eval's --include_path).
    #[arg(long)]
    pub include_path: Vec<PathBuf>,
    /// Local mirror of hub datasets (default: $GRAFT_DATASETS_DIR).
    #[arg(long)]
    pub datasets_dir: Option<PathBuf>,
    /// Few-shot examples per prompt (default: each task's `num_fewshot`, else 0).
    #[arg(long)]
    pub num_fewshot: Option<usize>,
    /// Evaluate only the first N documents of each task.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Output folder for results.json and the samples files.
    #[arg(long)]
    pub output: PathBuf,
    /// Earlier `graft eval` output folders to compare with (writes comparison.md and .png).
    #[arg(long)]
    pub compare: Vec<PathBuf>,
    /// Run the model's generated code for tasks scored by executing it (pass@1, humaneval).
    #[arg(long)]
    pub allow_code_execution: bool,
    /// Where neither bubblewrap nor `unshare -rn` can cut generated code off from the
    /// network, run it anyway (resource limits and a process group only).
    #[arg(long)]
    pub allow_network: bool,
}

/// The mirror of hub datasets: `--datasets-dir`, else `$GRAFT_DATASETS_DIR`.
pub fn datasets_dir(flag: &Option<PathBuf>) -> Option<PathBuf> {
    flag.clone()
        .or_else(|| std::env::var_os("GRAFT_DATASETS_DIR").map(PathBuf::from))
}

/// What one `--tasks` entry names: a task file, or the task files of a name, tag or group under
/// the include paths. Built-in tasks are handled by the caller.
pub fn task_files(
    spec: &str,
    index: &mut Option<TaskIndex>,
    include: &[PathBuf],
) -> Result<Vec<PathBuf>> {
    let path = PathBuf::from(spec);
    if path.is_file() {
        return Ok(vec![path]);
    }
    let index = index.get_or_insert_with(|| TaskIndex::scan(include));
    match index.expand(spec) {
        Some(files) => Ok(files),
        None if include.is_empty() => bail!(
            "--tasks: `{spec}` is neither a task file nor a built-in task ({}); name tasks from a folder of task files with --include-path",
            builtin::NAMES.join(", ")
        ),
        None => bail!(
            "--tasks: `{spec}` is not a task file, a built-in task, or a task, tag or group under --include-path {}",
            include.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The tasks to run, each once, and the groups whose rows aggregate them.
fn open_tasks(args: &Args) -> Result<(Vec<Task>, Vec<GroupRun>)> {
    let opts = OpenOptions {
        num_fewshot: args.num_fewshot,
        limit: args.limit,
        datasets_dir: datasets_dir(&args.datasets_dir),
    };
    let mut index = None;
    let mut tasks: Vec<Task> = Vec::new();
    let mut groups: Vec<GroupRun> = Vec::new();
    for spec in &args.tasks {
        // Built-in tasks score whole texts: --num-fewshot does not apply to them.
        if let Some(t) = builtin::task(spec, args.limit) {
            tasks.push(t);
            continue;
        }
        for file in task_files(spec, &mut index, &args.include_path)? {
            if !tasks.iter().any(|t| t.source == file) {
                tasks.push(Task::open(&file, &opts)?);
            }
        }
        if let Some(ix) = &index {
            for g in ix.group_runs(spec).map_err(anyhow::Error::msg)? {
                if !groups.iter().any(|x| x.name == g.name) {
                    groups.push(g);
                }
            }
        }
    }
    Ok((tasks, groups))
}

pub fn run(args: Args) -> Result<()> {
    crate::io::claim_outputs(&[&args.output.join("results.json")], &[])?;
    // Read every task first: a bad task file fails before the model loads.
    let (tasks, groups) = open_tasks(&args)?;
    graft_eval::task::check_code_execution(
        &tasks,
        args.allow_code_execution,
        args.allow_network,
        "--allow-code-execution",
    )
    .map_err(anyhow::Error::msg)?;
    let (source, model, _) = args.model.load_any()?;
    let lm = Lm::new(&source, &model)?;
    let mut outcomes = Vec::new();
    for task in &tasks {
        let bar = progress(task.docs.len() as u64, "docs");
        bar.set_message(task.cfg.task.clone());
        let out = graft_eval::run(task, &lm, || bar.inc(1))?;
        bar.finish_and_clear();
        outcomes.push(out);
    }
    let date = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let info = results::RunInfo {
        model: args.model.model.display().to_string(),
        adapter: args.model.adapter.as_ref().map(|a| a.display().to_string()),
        limit: args.limit,
        date,
    };
    let pairs: Vec<_> = tasks.iter().zip(&outcomes).collect();
    let rows = results::group_rows(&pairs, &groups).map_err(anyhow::Error::msg)?;
    let groups: Vec<_> = groups
        .into_iter()
        .zip(rows)
        .map(|(g, (_, r))| (g, r))
        .collect();
    let json = results::results_json(&pairs, &groups, &info);
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("{}: cannot create", args.output.display()))?;
    for out in &outcomes {
        let mut text = String::new();
        for s in &out.samples {
            text.push_str(&s.to_string());
            text.push('\n');
        }
        write_atomic(&args.output.join(samples_file(&out.name)), text.as_bytes())?;
    }
    write_atomic(
        &args.output.join("results.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    println!("{}", results::markdown(&pairs, &groups));
    if !args.compare.is_empty() {
        println!(
            "{}",
            super::eval_compare::write(&args.compare, &args.output, &json)?
        );
    }
    Ok(())
}

/// `samples_<task>.jsonl` with the task name reduced to a file name: a task called `../../x` (task
/// names come from YAML files) cannot write outside the output folder.
fn samples_file(task: &str) -> String {
    let mut safe: String = task
        .chars()
        .map(|c| match c.is_alphanumeric() || "-_.".contains(c) {
            true => c,
            false => '_',
        })
        .collect();
    if safe.starts_with('.') {
        safe.insert(0, '_');
    }
    format!("samples_{safe}.jsonl")
}

#[cfg(test)]
mod tests {
    #[test]
    fn task_names_become_plain_file_names() {
        assert_eq!(super::samples_file("arc_easy"), "samples_arc_easy.jsonl");
        for bad in ["../../x", "/etc/passwd", "a/../../b", "..", "c:\\x"] {
            let f = super::samples_file(bad);
            assert!(!f.contains('/') && !f.contains('\\'), "{bad}: {f}");
            assert_eq!(
                std::path::Path::new(&f).components().count(),
                1,
                "{bad}: {f}"
            );
        }
    }
}
