//! graft-train: the training loop and what it needs — AdamW, schedules, objectives over per-token
//! log-probs, deterministic data loading, checkpoints with exact resume, metrics, plots, manifests.

pub mod batch;
pub mod checkpoint;
pub mod loader;
pub mod lst_init;
pub mod manifest;
pub mod metrics;
pub mod mixture;
pub mod net;
pub mod objectives;
pub mod optim;
pub mod recipe;
pub mod reference;
pub mod schedule;
pub mod step;
pub mod task_eval;
pub mod trainable;
pub mod trainer;

pub use recipe::Recipe;
pub use trainer::{train, TrainOptions, TrainSummary};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Recipe(String),
    #[error("{0}")]
    Data(String),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Model(#[from] graft_models::ModelError),
    #[error("{0}")]
    Candle(#[from] candle_core::Error),
    /// Training stopped before a bad update; the last good checkpoint is kept.
    #[error("step {step}: {what} is not finite ({value}); stopped before the update. Last good checkpoint: {checkpoint}")]
    NonFinite {
        step: usize,
        what: &'static str,
        value: f64,
        checkpoint: String,
    },
}

impl From<graft_data::rows::RowError> for TrainError {
    fn from(e: graft_data::rows::RowError) -> Self {
        match e {
            graft_data::rows::RowError::Recipe(m) => TrainError::Recipe(m),
            graft_data::rows::RowError::Data(m) => TrainError::Data(m),
        }
    }
}
