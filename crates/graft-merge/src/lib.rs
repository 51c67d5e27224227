//! graft-merge: model merging with mergekit's YAML and semantics (mergekit 0.1.5; parity
//! fixtures in tests/fixtures/merge from tools/fixtures/make_merge_fixtures.py), streamed tensor
//! by tensor from memory-mapped safetensors so memory holds one tensor group at a time.

pub mod io;
pub mod load;
pub mod merge;
pub mod mergekit_yaml;
pub mod methods;
pub mod plan;
pub mod vocab;

pub use merge::{run, Options, Summary};
pub use mergekit_yaml::MergeConfig;

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// The config file, then what is wrong.
    #[error("{0}: {1}")]
    Config(String, String),
    #[error("{0}")]
    Merge(String),
}
