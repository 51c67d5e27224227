//! Evaluation tasks during training (`[train] eval_tasks`): graft-eval's lm-eval-compatible tasks
//! run on the model being trained — adapter or full weights as they are at that step — their
//! aggregated metrics logged into metrics.jsonl as `<task>/<metric>,<filter>`.

use graft_eval::{builtin, Lm, Task};
use graft_models::ModelSource;
use serde_json::{Map, Value};

use crate::TrainError;
use graft_models::Model;

pub struct TaskEval {
    tasks: Vec<Task>,
}

impl TaskEval {
    /// Opens every task up front, so a bad task file stops the run before training.
    pub fn open(
        specs: &[String],
        limit: Option<usize>,
        allow_code: bool,
        allow_network: bool,
    ) -> Result<Self, TrainError> {
        // Hub datasets come from the mirror named by GRAFT_DATASETS_DIR, as for `graft eval`.
        let opts = graft_eval::OpenOptions {
            limit,
            datasets_dir: std::env::var_os("GRAFT_DATASETS_DIR").map(Into::into),
            ..Default::default()
        };
        let tasks = specs
            .iter()
            .map(|s| match builtin::task(s, limit) {
                Some(t) => Ok(t),
                None => Task::open(std::path::Path::new(s), &opts)
                    .map_err(|e| TrainError::Recipe(format!("train.eval_tasks: {e}"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let how = "[train] eval_allow_code_execution = true";
        graft_eval::task::check_code_execution(&tasks, allow_code, allow_network, how)
            .map_err(|e| TrainError::Recipe(format!("train.eval_tasks: {e}")))?;
        Ok(Self { tasks })
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Every task's metrics on `model` now.
    pub fn run(
        &self,
        model: &Model,
        source: &ModelSource,
    ) -> Result<Map<String, Value>, TrainError> {
        let mut out = Map::new();
        if self.tasks.is_empty() {
            return Ok(out);
        }
        let lm = Lm::new(source, model).map_err(|e| TrainError::Recipe(e.to_string()))?;
        for task in &self.tasks {
            let res =
                graft_eval::run(task, &lm, || {}).map_err(|e| TrainError::Recipe(e.to_string()))?;
            for (metric, filter, value, _) in res.metrics {
                out.insert(
                    format!("{}/{metric},{filter}", res.name),
                    Value::from(value),
                );
            }
        }
        Ok(out)
    }
}
