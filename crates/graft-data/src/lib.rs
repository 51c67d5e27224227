//! graft-data: row sources, TRL row shapes, chat templates with assistant masks, tokenized examples
//! and packing; denoising preprocessors (T5 span corruption, UL2); dedup, quality filters,
//! decontamination; token caches; task preprocessors (filters, field mapping, table
//! linearisation, rationale formatting); and a recipe's `[data]` section turned into training
//! rows (`rows`).

pub mod chat;
pub mod decontaminate;
pub mod dedup;
pub mod formats;
pub mod pack;
pub mod preprocess;
pub mod quality;
pub mod rows;
pub mod rso;
pub mod source;
pub mod span_corruption;
pub mod token_cache;
pub mod tokenizer_train;
pub mod ul2;

pub use chat::{parse_messages, ChatTemplate, Message, Rendered};
pub use formats::{parse_row, Example, Row, Tokenize, Turns};
pub use pack::{pack, PackedRow};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{0}")]
    Template(String),
}
