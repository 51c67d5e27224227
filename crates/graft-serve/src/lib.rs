//! graft-serve: decoding (greedy and sampled, KV-cached) for `graft generate` and, later, the
//! OpenAI-compatible server.

pub mod generate;
pub mod sampling;

pub use generate::{generate, GenerateOptions, StopReason};
pub use sampling::Sampler;
