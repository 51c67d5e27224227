//! Vocabulary alignment for `tokenizer_source` (mergekit 0.1.5 `tokenizer/build.py`,
//! `tokenizer/embed.py`): the output vocabulary is one model's tokenizer (`base`: the base model,
//! or a model path), tokens with ids below that model's `vocab_size`; every input's embedding
//! and LM-head rows are re-indexed by token string. A token an input lacks gets: the row of the
//! only model that has it; zeros when none has it; else the base's row when the base has it,
//! else the mean of the rows of the models that have it. `union` extends the base's vocabulary
//! with every other model's tokens it lacks (as added tokens, in model order).
//!
//! Shapes: an embedding or head (V, H), aligned to (V_out, H).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::plan::Plan;

pub struct Vocab {
    tokens: Vec<String>,
    /// Per plan model: token → row.
    rows: Vec<HashMap<String, usize>>,
    base: Option<usize>,
    /// `union`: tokenizer.json `added_tokens` entries for the tokens beyond the base's.
    pub added: Vec<Value>,
}

/// The `added_tokens` entry for `token` at `id`: the donor model's own entry (same flags) when it
/// is one of its added tokens, else a plain, normalized token.
fn added_entry(dir: &Path, token: &str, id: usize) -> Result<Value, String> {
    let path = dir.join("tokenizer.json");
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut entry = v["added_tokens"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["content"] == token).cloned())
        .unwrap_or_else(|| {
            serde_json::json!({"content": token, "single_word": false, "lstrip": false, "rstrip": false,
                               "normalized": true, "special": false})
        });
    entry["id"] = Value::from(id);
    Ok(entry)
}

impl Vocab {
    /// The base tokenizer.json with the union's new tokens added (`None` unless `union` added some).
    pub fn union_tokenizer(&self, base_dir: &Path) -> Result<Option<String>, String> {
        if self.added.is_empty() {
            return Ok(None);
        }
        let path = base_dir.join("tokenizer.json");
        let mut v: Value = serde_json::from_str(
            &std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?,
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(a) = v["added_tokens"].as_array_mut() {
            a.extend(self.added.iter().cloned());
        }
        serde_json::to_string_pretty(&v)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// token → id from a `tokenizer.json` (the model's vocabulary and the added tokens), ids below
/// `limit`.
fn token_ids(dir: &Path, limit: Option<usize>) -> Result<HashMap<String, usize>, String> {
    let path = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut map = HashMap::new();
    match &v["model"]["vocab"] {
        Value::Object(m) => {
            for (t, id) in m {
                if let Some(id) = id.as_u64() {
                    map.insert(t.clone(), id as usize);
                }
            }
        }
        Value::Array(a) => {
            for (id, e) in a.iter().enumerate() {
                if let Some(t) = e.get(0).and_then(Value::as_str) {
                    map.insert(t.to_string(), id);
                }
            }
        }
        _ => return Err(format!("{}: no model.vocab", path.display())),
    }
    for a in v["added_tokens"].as_array().into_iter().flatten() {
        if let (Some(t), Some(id)) = (a["content"].as_str(), a["id"].as_u64()) {
            map.insert(t.to_string(), id as usize);
        }
    }
    if let Some(l) = limit {
        map.retain(|_, id| *id < l);
    }
    Ok(map)
}

fn vocab_size(config: &Value) -> Option<usize> {
    config["vocab_size"].as_u64().map(|v| v as usize)
}

impl Vocab {
    pub fn is_vocab_tensor(name: &str) -> bool {
        name.ends_with("embed_tokens.weight") || name == "lm_head.weight"
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn build(
        plan: &Plan,
        source: &str,
        base_model: Option<&str>,
        resolve: &dyn Fn(&str) -> PathBuf,
    ) -> Result<Self, String> {
        let base = base_model.and_then(|b| plan.paths.iter().position(|p| p == b));
        let (dir, limit) = match source {
            "base" | "union" => {
                let m = base.unwrap_or(plan.donor);
                (
                    plan.models[m].dir.clone(),
                    vocab_size(&plan.models[m].config),
                )
            }
            path => {
                let dir = resolve(path);
                let cfg = std::fs::read_to_string(dir.join("config.json"))
                    .ok()
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok());
                let limit = cfg.as_ref().and_then(vocab_size);
                (dir, limit)
            }
        };
        let ids = token_ids(&dir, limit)?;
        let gaps = || format!("{}: the vocabulary has gaps in its ids", dir.display());
        // Ids without gaps are 0..n for n tokens: a larger id (even u32::MAX) is a gap, found
        // before anything of its size is allocated.
        let mut tokens = vec![String::new(); ids.len()];
        for (t, id) in ids {
            *tokens.get_mut(id).ok_or_else(gaps)? = t;
        }
        if tokens.iter().any(String::is_empty) {
            return Err(gaps());
        }
        let rows = plan
            .models
            .iter()
            .map(|m| token_ids(&m.dir, vocab_size(&m.config)))
            .collect::<Result<Vec<_>, _>>()?;
        // union: the base's tokens, then each other model's new ones, by id, in config order.
        let mut added = Vec::new();
        if source == "union" {
            let mut have: std::collections::HashSet<String> = tokens.iter().cloned().collect();
            for (m, r) in rows.iter().enumerate() {
                let mut by_id: Vec<(&usize, &String)> = r.iter().map(|(t, i)| (i, t)).collect();
                by_id.sort();
                for (_, t) in by_id {
                    if have.insert(t.clone()) {
                        added.push(added_entry(&plan.models[m].dir, t, tokens.len())?);
                        tokens.push(t.clone());
                    }
                }
            }
        }
        Ok(Self {
            tokens,
            rows,
            base,
            added,
        })
    }

    /// The group's vocabulary tensors (model, values (V_m·H)) aligned to the output vocabulary.
    pub fn align_group(&self, group: &[(usize, Vec<f32>)], hidden: usize) -> Vec<Vec<f32>> {
        let row = |m: usize, values: &[f32], tok: &str| -> Option<Vec<f32>> {
            let r = *self.rows[m].get(tok)?;
            values
                .get(r * hidden..(r + 1) * hidden)
                .map(<[f32]>::to_vec)
        };
        let mut out: Vec<Vec<f32>> =
            vec![Vec::with_capacity(self.tokens.len() * hidden); group.len()];
        for tok in &self.tokens {
            let have: Vec<(usize, Vec<f32>)> = group
                .iter()
                .enumerate()
                .filter_map(|(k, (m, v))| row(*m, v, tok).map(|r| (k, r)))
                .collect();
            let default = match have.len() {
                0 => vec![0.0; hidden],
                1 => have[0].1.clone(),
                n => match self
                    .base
                    .and_then(|b| group.iter().position(|(m, _)| *m == b))
                    .and_then(|k| have.iter().find(|h| h.0 == k))
                {
                    Some((_, r)) => r.clone(),
                    None => (0..hidden)
                        .map(|j| have.iter().map(|h| h.1[j]).sum::<f32>() / n as f32)
                        .collect(),
                },
            };
            for (k, o) in out.iter_mut().enumerate() {
                match have.iter().find(|h| h.0 == k) {
                    Some((_, r)) => o.extend_from_slice(r),
                    None => o.extend_from_slice(&default),
                }
            }
        }
        out
    }
}
