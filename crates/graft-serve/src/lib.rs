//! graft-serve: decoding (greedy, sampled, beam search for seq2seq; KV-cached) for `graft generate` and, later, the
//! OpenAI-compatible server.

pub mod batch;
pub mod generate;
pub mod sampling;
pub mod seq2seq;

pub use batch::{generate_batch, generate_batch_until};
pub use generate::{generate, GenerateOptions, StopReason};
pub use sampling::Sampler;
pub use seq2seq::{beam_search, BeamOptions};
