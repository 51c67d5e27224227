//! Errors of model loading and running. Each variant names the file (or tensor) at fault so the CLI
//! can print one line that a user can act on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("{path}: field `{field}`: {msg}")]
    Config {
        path: PathBuf,
        field: String,
        msg: String,
    },
    #[error("{path}: unknown architecture `{name}` (supported: {supported})")]
    UnknownArchitecture {
        path: PathBuf,
        name: String,
        supported: String,
    },
    #[error("{path}: tensor `{name}`: {msg}")]
    Tensor {
        path: PathBuf,
        name: String,
        msg: String,
    },
    /// An argument or input that no file names (the caller adds where it came from).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    pub fn file(path: impl Into<PathBuf>, msg: impl std::fmt::Display) -> Self {
        Self::File {
            path: path.into(),
            msg: msg.to_string(),
        }
    }
    pub fn config(path: impl Into<PathBuf>, field: &str, msg: impl std::fmt::Display) -> Self {
        Self::Config {
            path: path.into(),
            field: field.to_string(),
            msg: msg.to_string(),
        }
    }
    pub fn tensor(path: impl Into<PathBuf>, name: &str, msg: impl std::fmt::Display) -> Self {
        Self::Tensor {
            path: path.into(),
            name: name.to_string(),
            msg: msg.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, ModelError>;
