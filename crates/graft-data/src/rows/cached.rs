//! Rows from a token cache (`graft data tokenize`): documents already tokenized, memory-mapped.

use std::path::Path;

use super::{RowError, TrainRow};

/// Rows from a token cache (`graft data tokenize`): each document cut into `max_len` windows
/// (every token a target but the first of a window), packed when asked; with a shard (index,
/// count), every count-th document from `index` on.
pub fn cache_rows(
    dir: &Path,
    max_len: usize,
    packing: bool,
    shard: Option<(usize, usize)>,
) -> Result<Vec<TrainRow>, RowError> {
    let cache = crate::token_cache::TokenCache::open(dir).map_err(RowError::Data)?;
    let (index, count) = shard.unwrap_or((0, 1));
    let mut examples = Vec::new();
    for i in (index..cache.len()).step_by(count) {
        for chunk in cache.document(i).chunks(max_len.max(2)) {
            if chunk.len() > 1 {
                examples.push(crate::Example {
                    input_ids: chunk.to_vec(),
                    targets: (0..chunk.len()).map(|j| j > 0).collect(),
                });
            }
        }
    }
    if examples.is_empty() {
        return Err(RowError::Data(format!(
            "{}: no documents of two or more tokens",
            dir.display()
        )));
    }
    Ok(super::decoder::example_rows(examples, packing, max_len))
}
