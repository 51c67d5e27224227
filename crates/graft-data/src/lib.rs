//! graft-data: the data side of graft. For now: chat templates and TRL's conversational rows.

pub mod chat;

pub use chat::{parse_messages, ChatTemplate, Message};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{0}")]
    Template(String),
}
