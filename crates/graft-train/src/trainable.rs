//! `[train] trainable` and `new_rows_only`: which variables, and which of their rows, the
//! optimizer updates. Bllossom and Glot500 first train only the embeddings of an extended
//! vocabulary (`trainable = ["embed_tokens", "lm_head"]`), optionally only the rows `graft vocab
//! extend` added (`new_rows_only`, from the config's `graft_vocab_extended_from`).
//! Variables left out still get gradients where the backward passes through them; they are
//! neither updated nor given optimizer state.

use serde_json::Value;

use crate::optim::AdamW;
use crate::recipe::TrainSection;
use crate::TrainError;

/// The config key `graft vocab extend` writes: the number of rows the vocabulary had before.
pub const EXTENDED_FROM: &str = "graft_vocab_extended_from";

/// Restricts `opt` to the recipe's trainable variables and new rows.
pub fn restrict(opt: &mut AdamW, t: &TrainSection, config: &Value) -> Result<(), TrainError> {
    if t.trainable.is_empty() && !t.new_rows_only {
        return Ok(());
    }
    let old_rows = match t.new_rows_only {
        true => config[EXTENDED_FROM].as_u64().ok_or_else(|| {
            TrainError::Recipe(format!(
                "train.new_rows_only: the model's config.json has no `{EXTENDED_FROM}` (written by `graft vocab extend`)"
            ))
        })? as usize,
        false => 0,
    };
    let names: Vec<String> = opt.vars().map(|(n, _)| n.to_string()).collect();
    // A tied head is the embeddings: `lm_head` may name it.
    let tied = config["tie_word_embeddings"] == true;
    for p in &t.trainable {
        if !names.iter().any(|n| n.contains(p.as_str())) && !(tied && p == "lm_head") {
            return Err(TrainError::Recipe(format!(
                "train.trainable: `{p}` matches no variable (e.g. {})",
                names.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let keep =
        |n: &str| t.trainable.is_empty() || t.trainable.iter().any(|p| n.contains(p.as_str()));
    let is_rows = |n: &str| graft_models::vocab::trim::is_vocab_matrix(n);
    if t.new_rows_only && !names.iter().any(|n| keep(n) && is_rows(n)) {
        return Err(TrainError::Recipe(
            "train.new_rows_only: no embedding or head among the trainable variables".into(),
        ));
    }
    opt.restrict(keep, |n| if is_rows(n) { old_rows } else { 0 })
        .map_err(|e| TrainError::Recipe(format!("train.trainable: {e}")))
}
