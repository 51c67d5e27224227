//! graft-models: decoder families faithful to transformers, usable for training (every op
//! differentiable, logits for every position, caller-owned KV cache) and for inference; loading from
//! HF directories and GGUF files, saving HF directories.

pub mod config;
pub mod decoder;
pub mod error;
pub mod fsio;
pub mod gguf;
pub mod gguf_check;
pub mod gguf_tokenizer;
pub mod guard;
pub mod init;
pub mod layers;
pub mod load;
pub mod model;
pub mod qkernels;
pub mod registry;
pub mod save;
pub mod score;
pub mod t5;
pub mod tokenizer;
pub mod vocab;

pub use config::DecoderConfig;
pub use decoder::{next_token_logprobs, Decoder, Masking, SideNetwork};
pub use error::{ModelError, Result};
pub use layers::kv_cache::KvCache;
pub use load::{open_tokenizer, GenerationConfig, ModelSource, Quantization};
pub use model::{BatchState, LanguageModel, Model, ModelInput};
pub use t5::{T5Cache, T5Config, T5};
pub use tokenizer::Tokenizer;
