//! graft-eval: an evaluation harness that reads lm-eval-harness task YAML and writes lm-eval's
//! results and samples files, with the numbers lm-eval's HF backend gives (parity fixtures in
//! tests/fixtures/eval, made by tools/fixtures/make_eval_fixtures.py).

pub mod batch;
pub mod builtin;
pub mod code_exec;
pub mod evaluate;
pub mod filters;
pub mod groups;
pub mod harness;
pub mod hooks;
pub mod lm_eval_yaml;
pub mod metrics;
pub mod mirror;
pub mod prompt;
pub mod pyrandom;
pub mod pyrepr;
pub mod registry;
pub mod results;
pub mod seq2seq;
pub mod task;

pub use evaluate::{check, run, TaskOutcome};
pub use harness::Lm;
pub use registry::TaskIndex;
pub use task::{OpenOptions, Task};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A task file or its data: the file, then what is wrong.
    #[error("{0}: {1}")]
    Task(String, String),
    /// A task file that calls Python (`!function`), which graft never runs: the file, the key.
    #[error("{0}: {1}")]
    PythonHook(String, String),
    /// A document of a task: the file, the document index, what is wrong.
    #[error("{0}: document {1}: {2}")]
    Doc(String, usize, String),
    #[error("{0}")]
    Request(String),
    #[error("{0}")]
    Model(#[from] graft_models::ModelError),
    #[error("{0}")]
    Candle(#[from] candle_core::Error),
}
