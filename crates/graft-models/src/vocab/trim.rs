//! Vocabulary trimming (idT5, vocabtrimmer): keep the tokens a corpus uses, and what any text
//! needs to stay encodable, renumber them contiguously in their old order, and slice the
//! embeddings and head to match.
//! Kept: tokens the corpus uses at least `min_frequency` times (or its `top` most used), every
//! added/special token, byte-fallback pieces (`<0xXX>`), a byte-level BPE's 256 byte symbols, the
//! unknown token, the ids the config names (BOS, EOS, PAD), and the parts of every merge that
//! builds a kept token (recursively), so each kept token is still built the way it was. Merges
//! are kept when both parts and their result are; a text whose tokens were all kept therefore
//! takes the same merges in the same order and gets the same tokens.
//! BPE tokenizers (byte-level or SentencePiece-style with byte fallback) and Unigram ones (T5,
//! mT5: pieces kept in order with their scores); others are an error naming their model type.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::tokenizer::Tokenizer;
use crate::{ModelError, Result};

/// What to keep beyond the corpus's own tokens.
pub struct KeepRules<'a> {
    pub min_frequency: u64,
    /// Keep the `top` most used tokens instead of every token used `min_frequency` times.
    pub top: Option<usize>,
    /// Ids that must stay (the config's BOS, EOS, PAD).
    pub ids: &'a [u32],
    /// Token strings that must stay (`--keep`).
    pub tokens: &'a [String],
}

/// A merge as the tokenizer.json stores it: `["a", "b"]` or `"a b"`.
fn merge_pair(m: &Value) -> Option<(String, String)> {
    match m {
        Value::Array(p) if p.len() == 2 => Some((p[0].as_str()?.into(), p[1].as_str()?.into())),
        Value::String(s) => {
            let (a, b) = s.split_once(' ')?;
            Some((a.into(), b.into()))
        }
        _ => None,
    }
}

/// The tokenizer's JSON, checked to be a Unigram or a BPE whose merges concatenate their parts.
fn bpe_json(tok: &Tokenizer) -> Result<Value> {
    let err = |m: String| ModelError::file(&tok.source, m);
    let json: Value = tok
        .inner
        .to_string(false)
        .map_err(|e| err(e.to_string()))
        .and_then(|s| serde_json::from_str(&s).map_err(|e| err(e.to_string())))?;
    let model = &json["model"];
    if model["type"] != "BPE" && model["type"] != "Unigram" {
        return Err(err(format!(
            "trimming supports BPE and Unigram tokenizers; this one is {}",
            model["type"]
        )));
    }
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if model[key].as_str().is_some_and(|s| !s.is_empty()) {
            return Err(err(format!("trimming does not support a BPE with `{key}`")));
        }
    }
    Ok(json)
}

/// Whether the tokenizer runs GPT-2's byte-to-character mapping anywhere in its pre-tokenizer.
pub(super) fn byte_level(json: &Value) -> bool {
    json["pre_tokenizer"].to_string().contains("\"ByteLevel\"")
}

/// GPT-2's 256 byte symbols (bytes_to_unicode).
pub(super) fn byte_symbols() -> Vec<String> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut n = 0;
    (0..256u32)
        .map(|b| {
            let c = if printable(b) {
                b
            } else {
                n += 1;
                255 + n
            };
            char::from_u32(c).map(String::from).unwrap_or_default()
        })
        .collect()
}

/// The old ids to keep, ascending, given each token's count over the corpus.
pub fn kept_ids(tok: &Tokenizer, counts: &[u64], rules: &KeepRules) -> Result<Vec<u32>> {
    let json = bpe_json(tok)?;
    let vocab = tok.inner.get_vocab(true);
    let mut keep: HashSet<u32> = match rules.top {
        Some(n) => {
            let mut used: Vec<(u64, u32)> = (0..counts.len() as u32)
                .filter(|&i| counts[i as usize] > 0)
                .map(|i| (counts[i as usize], i))
                .collect();
            used.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            used.into_iter().take(n).map(|(_, i)| i).collect()
        }
        None => (0..counts.len() as u32)
            .filter(|&i| counts[i as usize] >= rules.min_frequency.max(1))
            .collect(),
    };
    keep.extend(rules.ids.iter().copied());
    for t in rules.tokens {
        let id = vocab.get(t).ok_or_else(|| {
            ModelError::file(
                &tok.source,
                format!("--keep: `{t}` is not in the vocabulary"),
            )
        })?;
        keep.insert(*id);
    }
    for a in json["added_tokens"].as_array().into_iter().flatten() {
        keep.extend(a["id"].as_u64().map(|i| i as u32));
    }
    let bytes = vocab
        .iter()
        .filter(|(p, _)| super::report::is_byte_piece(p));
    keep.extend(bytes.map(|(_, &i)| i));
    if let Some(unk) = json["model"]["unk_token"].as_str() {
        keep.extend(vocab.get(unk).copied());
    }
    keep.extend(json["model"]["unk_id"].as_u64().map(|i| i as u32));
    if byte_level(&json) {
        keep.extend(byte_symbols().iter().filter_map(|s| vocab.get(s).copied()));
    }
    // Every merge that builds a kept token keeps its parts, recursively.
    let mut builds: HashMap<u32, Vec<(u32, u32)>> = HashMap::new();
    for m in json["model"]["merges"].as_array().into_iter().flatten() {
        let Some((a, b)) = merge_pair(m) else {
            continue;
        };
        if let (Some(&ia), Some(&ib), Some(&it)) =
            (vocab.get(&a), vocab.get(&b), vocab.get(&format!("{a}{b}")))
        {
            builds.entry(it).or_default().push((ia, ib));
        }
    }
    let mut work: Vec<u32> = keep.iter().copied().collect();
    while let Some(t) = work.pop() {
        for &(a, b) in builds.get(&t).into_iter().flatten() {
            for p in [a, b] {
                if keep.insert(p) {
                    work.push(p);
                }
            }
        }
    }
    let mut ids: Vec<u32> = keep.into_iter().collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Old id → new id for the kept ids (ascending: their order is kept).
pub fn renumbering(kept: &[u32]) -> HashMap<u32, u32> {
    kept.iter()
        .enumerate()
        .map(|(n, &o)| (o, n as u32))
        .collect()
}

/// Every id under a post-processor's special tokens (`TemplateProcessing`'s `ids`, or
/// `BertProcessing`/`RobertaProcessing`'s `[token, id]` pairs), renumbered.
pub(super) fn remap_post_processor(v: &mut Value, new: &HashMap<u32, u32>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                match (k.as_str(), x) {
                    ("ids", Value::Array(ids)) => {
                        for id in ids.iter_mut() {
                            if let Some(n) = id.as_u64().and_then(|i| new.get(&(i as u32))) {
                                *id = (*n).into();
                            }
                        }
                    }
                    ("sep" | "cls", Value::Array(pair)) if pair.len() == 2 => {
                        if let Some(n) = pair[1].as_u64().and_then(|i| new.get(&(i as u32))) {
                            pair[1] = (*n).into();
                        }
                    }
                    (_, x) => remap_post_processor(x, new),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| remap_post_processor(x, new)),
        _ => {}
    }
}

/// The tokenizer restricted to `kept` (old ids, ascending), as tokenizer.json text: vocabulary
/// renumbered, merges whose parts and result are kept, added tokens and post-processor ids
/// renumbered. Checked by loading it back.
pub fn trimmed_tokenizer_json(tok: &Tokenizer, kept: &[u32]) -> Result<String> {
    let mut json = bpe_json(tok)?;
    let new = renumbering(kept);
    let old_vocab = tok.inner.get_vocab(false);
    let mut vocab = serde_json::Map::new();
    let mut by_id: Vec<(&String, u32)> = old_vocab
        .iter()
        .filter_map(|(p, i)| new.get(i).map(|n| (p, *n)))
        .collect();
    by_id.sort_by_key(|&(_, n)| n);
    for (p, n) in by_id {
        vocab.insert(p.clone(), n.into());
    }
    if json["model"]["type"] == "Unigram" {
        // A Unigram has no merges: the kept pieces, in order, with their scores. The best
        // segmentation of a text whose pieces were all kept is still the best.
        let pieces = json["model"]["vocab"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let kept_pieces: Vec<Value> = kept
            .iter()
            .filter_map(|&i| pieces.get(i as usize).cloned())
            .collect();
        json["model"]["vocab"] = Value::Array(kept_pieces);
        let unk = json["model"]["unk_id"]
            .as_u64()
            .and_then(|i| new.get(&(i as u32)));
        json["model"]["unk_id"] = unk.map_or(Value::Null, |n| (*n).into());
    } else {
        trim_bpe(&mut json, vocab);
    }
    finish_trimmed(tok, json, &new)
}

/// A BPE's vocabulary and the merges whose parts and result are kept.
fn trim_bpe(json: &mut Value, vocab: serde_json::Map<String, Value>) {
    let kept_piece = |p: &str| vocab.contains_key(p);
    let merges: Vec<Value> = json["model"]["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            merge_pair(m).is_some_and(|(a, b)| {
                kept_piece(&a) && kept_piece(&b) && kept_piece(&format!("{a}{b}"))
            })
        })
        .cloned()
        .collect();
    json["model"]["vocab"] = Value::Object(vocab);
    json["model"]["merges"] = Value::Array(merges);
}

/// Added tokens and post-processor ids renumbered; checked by loading the result.
fn finish_trimmed(tok: &Tokenizer, mut json: Value, new: &HashMap<u32, u32>) -> Result<String> {
    let err = |m: String| ModelError::file(&tok.source, m);
    for a in json["added_tokens"].as_array_mut().into_iter().flatten() {
        let id = a["id"].as_u64().and_then(|i| new.get(&(i as u32)));
        a["id"] = id.map_or(Value::Null, |n| (*n).into());
    }
    remap_post_processor(&mut json["post_processor"], new);
    let text = serde_json::to_string(&json).map_err(|e| err(e.to_string()))?;
    tokenizers::Tokenizer::from_bytes(text.as_bytes())
        .map_err(|e| err(format!("the trimmed tokenizer does not load: {e}")))?;
    Ok(text)
}

/// What a trim did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrimSummary {
    pub vocabulary_before: usize,
    pub vocabulary_after: usize,
    pub parameters_before: usize,
    pub parameters_after: usize,
}

/// The config keys that hold token ids (a number or a list of numbers).
const ID_KEYS: [&str; 4] = [
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
];

/// The ids `json` names under [`ID_KEYS`].
pub fn named_ids(json: &Value) -> Vec<u32> {
    ID_KEYS
        .iter()
        .flat_map(|k| match &json[*k] {
            Value::Number(n) => n.as_u64().into_iter().collect::<Vec<_>>(),
            Value::Array(a) => a.iter().filter_map(Value::as_u64).collect(),
            _ => Vec::new(),
        })
        .map(|i| i as u32)
        .collect()
}

/// [`ID_KEYS`] of `json` renumbered (an id that was not kept is an error: the caller keeps them).
fn remap_ids(json: &mut Value, new: &HashMap<u32, u32>) {
    let map = |v: &Value| {
        v.as_u64()
            .and_then(|i| new.get(&(i as u32)))
            .map(|n| Value::from(*n))
    };
    for k in ID_KEYS {
        match &mut json[k] {
            Value::Number(_) => {
                if let Some(n) = map(&json[k]) {
                    json[k] = n;
                }
            }
            Value::Array(a) => {
                for x in a.iter_mut() {
                    if let Some(n) = map(x) {
                        *x = n;
                    }
                }
            }
            _ => {}
        }
    }
}

/// [`ID_KEYS`] of `json` renumbered by `new`; an id it does not map is removed (a list keeps
/// the ids it maps).
pub(super) fn remap_or_drop_ids(json: &mut Value, new: &HashMap<u32, u32>) {
    for k in ID_KEYS {
        let v = match &json[k] {
            Value::Number(n) => n
                .as_u64()
                .and_then(|i| new.get(&(i as u32)))
                .map(|n| Value::from(*n)),
            Value::Array(a) => Some(Value::Array(
                a.iter()
                    .filter_map(|x| new.get(&(x.as_u64()? as u32)).map(|n| Value::from(*n)))
                    .collect(),
            )),
            _ => continue,
        };
        match (v, json.as_object_mut()) {
            (Some(v), _) => json[k] = v,
            (None, Some(o)) => {
                o.remove(k);
            }
            _ => {}
        }
    }
}

/// The weight names whose rows are token ids: input embeddings and heads.
pub fn is_vocab_matrix(name: &str) -> bool {
    name.ends_with("embed_tokens.weight") || name == "lm_head.weight" || name == "shared.weight"
}

/// The dtype the weights are stored in (a GGUF's are written in f32, as `graft convert` does).
pub(crate) fn stored_dtype(source: &crate::ModelSource) -> candle_core::DType {
    let c = &source.config_json;
    match c["dtype"].as_str().or(c["torch_dtype"].as_str()) {
        Some("bfloat16") => candle_core::DType::BF16,
        Some("float16") => candle_core::DType::F16,
        _ => candle_core::DType::F32,
    }
}

/// Writes `source` trimmed to `kept` (old ids, ascending) as an HF directory at `out`: the
/// embedding and head rows sliced, `vocab_size` and the token ids in config.json,
/// generation_config.json and tokenizer_config.json renumbered, tokenizer.json trimmed. Weights
/// keep the input's dtype (f32 for a GGUF, as `graft convert` writes it).
pub fn save_trimmed(
    source: &crate::ModelSource,
    tok: &Tokenizer,
    kept: &[u32],
    out: &std::path::Path,
    replace: bool,
) -> Result<TrimSummary> {
    use candle_core::{Device, Tensor};
    let new = renumbering(kept);
    let dtype = stored_dtype(source);
    let mut tensors = source.tensors(dtype)?;
    let parameters_before = tensors.values().map(|t| t.elem_count()).sum();
    let index = Tensor::new(kept, &Device::Cpu).map_err(|e| ModelError::file(&source.path, e))?;
    let rows = source.config_json["vocab_size"].as_u64().unwrap_or(0) as usize;
    for (name, t) in tensors.iter_mut() {
        if !is_vocab_matrix(name) {
            continue;
        }
        let n = t
            .dim(0)
            .map_err(|e| ModelError::tensor(&source.path, name, e))?;
        if kept.last().is_some_and(|&k| k as usize >= n) {
            return Err(ModelError::tensor(
                &source.path,
                name,
                format!(
                    "{n} rows, but the tokenizer has id {}",
                    kept[kept.len() - 1]
                ),
            ));
        }
        *t = t
            .index_select(&index, 0)
            .map_err(|e| ModelError::tensor(&source.path, name, e))?;
    }
    let parameters_after = tensors.values().map(|t| t.elem_count()).sum();
    let mut config = source.config_json_for(dtype);
    remap_ids(&mut config, &new);
    config["vocab_size"] = kept.len().into();
    // Rows were renumbered: an extension's boundary no longer holds.
    if let Some(c) = config.as_object_mut() {
        c.remove("graft_vocab_extended_from");
    }
    let mut files = Vec::new();
    for (name, text) in source.tokenizer_files()? {
        let text = match name {
            "tokenizer.json" => trimmed_tokenizer_json(tok, kept)?,
            "generation_config.json" | "tokenizer_config.json" => {
                let mut v: Value = serde_json::from_str(&text)
                    .map_err(|e| ModelError::file(&source.path, format!("{name}: {e}")))?;
                remap_ids(&mut v, &new);
                if let Some(Value::Object(dec)) = v.get_mut("added_tokens_decoder") {
                    *dec = std::mem::take(dec)
                        .into_iter()
                        .filter_map(|(k, x)| {
                            let n = new.get(&k.parse::<u32>().ok()?)?;
                            Some((n.to_string(), x))
                        })
                        .collect();
                }
                serde_json::to_string_pretty(&v).unwrap_or(text)
            }
            _ => text,
        };
        files.push((name, text));
    }
    crate::save::save_hf_dir(out, &config, &tensors, &files, replace)?;
    Ok(TrimSummary {
        vocabulary_before: rows.max(tok.inner.get_vocab_size(true)),
        vocabulary_after: kept.len(),
        parameters_before,
        parameters_after,
    })
}
