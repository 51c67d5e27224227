//! `graft eval`: lm-eval-harness tasks (task YAML files, or built-in tasks) on a model, written as
//! lm-eval writes them: `results.json` and `samples_<task>.jsonl`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use graft_eval::{builtin, results, Lm, Task};

use crate::io::{progress, write_atomic, ModelArgs};

#[derive(clap::Args, Debug)]
#[command(
    about = "Evaluate a model on lm-eval-harness tasks (task YAML or built-in)",
    after_help = "Tasks: lm-eval task YAML files with local data (dataset_path: json | parquet and\n\
dataset_kwargs.data_files, relative to the YAML file or the working directory), or built-in tasks\n\
(austen_bpb: bits per byte on bundled held-out prose). Output: DIR/results.json (lm-eval's layout:\n\
results, configs, versions, n-shot, n-samples, …) and DIR/samples_<task>.jsonl.\n\n\
Example:\n  graft eval --model SmolLM2-135M-Instruct.Q8_0.gguf --tasks austen_bpb,my_task.yaml --limit 100 --output eval/"
)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Comma-separated task YAML files and/or built-in task names.
    #[arg(long, value_delimiter = ',', required = true)]
    pub tasks: Vec<String>,
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

fn open_task(spec: &str, args: &Args) -> Result<Task> {
    // Built-in tasks score whole texts: --num-fewshot does not apply to them.
    if let Some(t) = builtin::task(spec, args.limit) {
        return Ok(t);
    }
    let path = PathBuf::from(spec);
    if !path.exists() {
        bail!(
            "--tasks: `{spec}` is neither a task file nor a built-in task ({})",
            builtin::NAMES.join(", ")
        );
    }
    Ok(Task::open(&path, args.num_fewshot, args.limit)?)
}

pub fn run(args: Args) -> Result<()> {
    crate::io::claim_outputs(&[&args.output.join("results.json")], &[])?;
    // Read every task first: a bad task file fails before the model loads.
    let tasks = args
        .tasks
        .iter()
        .map(|t| open_task(t, &args))
        .collect::<Result<Vec<_>>>()?;
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
    let json = results::results_json(&pairs, &info);
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
    println!("{}", results::markdown(&pairs));
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
