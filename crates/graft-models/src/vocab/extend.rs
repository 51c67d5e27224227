//! Vocabulary extension (Bllossom, Glot500): new tokens learned as BPE merges on a corpus on top
//! of the existing ones, appended after them, so encoding runs the same BPE (no added tokens
//! matched outside it) and every text first takes the old merges, then the new ones.
//! Learning: the corpus is tokenized by the old tokenizer, its tokens grouped by pre-token
//! (word), and the most frequent adjacent pair within a word (ties: the smaller pair of ids) is
//! merged, `add` times; pairs with a byte-fallback piece or an added token, pairs whose right
//! part starts a word (`▁`), and pairs whose concatenation is already in the vocabulary, are not
//! merged.
//! New rows: `fvt` = the mean of the old rows of the old tokens the new one is made of (FVT,
//! Gee et al. 2022), `mean` = the mean of all old rows. Old rows stay bit-identical.
//! Shapes: embeddings and an untied head (V, H) → (V + add, H).

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::tokenizer::Tokenizer;
use crate::{ModelError, Result};

/// How new rows are initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    Fvt,
    Mean,
}

/// The learned merges: each new token's parts (as strings) and the old ids it is made of.
pub struct Learned {
    pub merges: Vec<(String, String)>,
    pub pieces: Vec<Vec<u32>>,
}

/// Learns up to `add` merges; fewer only when the corpus offers no more pairs (the caller
/// decides whether that is an error).
pub fn learn(tok: &Tokenizer, texts: &[String], add: usize) -> Result<Learned> {
    let err = |e: String| ModelError::file(&tok.source, e);
    let vocab = tok.inner.get_vocab(true);
    let mut strings: Vec<String> =
        vec![String::new(); vocab.values().max().map_or(0, |m| *m as usize + 1)];
    for (s, &i) in &vocab {
        strings[i as usize] = s.clone();
    }
    let added: HashSet<u32> = tok
        .inner
        .get_added_tokens_decoder()
        .keys()
        .copied()
        .collect();
    let mergeable = |id: u32, s: &str| !added.contains(&id) && !super::report::is_byte_piece(s);
    // Words (runs of tokens of one pre-token) and how often each occurs.
    let mut counts: HashMap<Vec<u32>, u64> = HashMap::new();
    for t in texts {
        let enc = tok
            .inner
            .encode(t.as_str(), false)
            .map_err(|e| err(e.to_string()))?;
        let (ids, words) = (enc.get_ids(), enc.get_word_ids());
        let mut start = 0;
        for i in 1..=ids.len() {
            if i == ids.len() || words[i] != words[start] || words[i].is_none() {
                *counts.entry(ids[start..i].to_vec()).or_default() += 1;
                start = i;
            }
        }
    }
    let mut words: Vec<(Vec<u32>, u64)> = counts.into_iter().collect();
    words.sort();
    let mut pieces: Vec<Vec<u32>> = Vec::new();
    let mut merges = Vec::new();
    let known: HashSet<String> = vocab.keys().cloned().collect();
    let base = strings.len() as u32;
    let mut blocked: HashSet<(u32, u32)> = HashSet::new();
    let piece_of = |id: u32, pieces: &Vec<Vec<u32>>| -> Vec<u32> {
        if id < base {
            vec![id]
        } else {
            pieces[(id - base) as usize].clone()
        }
    };
    while merges.len() < add {
        let mut pairs: HashMap<(u32, u32), u64> = HashMap::new();
        for (w, c) in &words {
            for p in w.windows(2) {
                let (a, b) = (p[0], p[1]);
                // A SentencePiece-style piece starts a word with ▁: no token joins two words.
                let (sa, sb) = (&strings[a as usize], &strings[b as usize]);
                if mergeable(a, sa) && mergeable(b, sb) && !sb.starts_with('▁') {
                    *pairs.entry((a, b)).or_default() += c;
                }
            }
        }
        let best = pairs
            .into_iter()
            .filter(|(p, _)| !blocked.contains(p))
            .max_by(|x, y| x.1.cmp(&y.1).then(y.0.cmp(&x.0)));
        let Some(((a, b), _)) = best else { break };
        let s = format!("{}{}", strings[a as usize], strings[b as usize]);
        if known.contains(&s) || strings[base as usize..].contains(&s) {
            blocked.insert((a, b));
            continue;
        }
        let id = strings.len() as u32;
        merges.push((strings[a as usize].clone(), strings[b as usize].clone()));
        let mut made = piece_of(a, &pieces);
        made.extend(piece_of(b, &pieces));
        pieces.push(made);
        strings.push(s);
        for (w, _) in words.iter_mut() {
            let mut i = 0;
            while i + 1 < w.len() {
                if w[i] == a && w[i + 1] == b {
                    w[i] = id;
                    w.remove(i + 1);
                }
                i += 1;
            }
        }
    }
    Ok(Learned { merges, pieces })
}

/// The tokenizer with the learned merges appended and their tokens given ids from `first`.
pub fn extended_tokenizer_json(tok: &Tokenizer, learned: &Learned, first: u32) -> Result<String> {
    let err = |e: String| ModelError::file(&tok.source, e);
    let text = tok.inner.to_string(false).map_err(|e| err(e.to_string()))?;
    let mut json: Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    if json["model"]["type"] != "BPE" {
        return Err(err(format!(
            "extending supports BPE tokenizers; this one is {}",
            json["model"]["type"]
        )));
    }
    let as_strings = json["model"]["merges"]
        .as_array()
        .and_then(|m| m.first())
        .is_some_and(Value::is_string);
    let model = &mut json["model"];
    for (n, (a, b)) in learned.merges.iter().enumerate() {
        model["vocab"][format!("{a}{b}")] = (first + n as u32).into();
        let m: Value = match as_strings {
            true => format!("{a} {b}").into(),
            false => serde_json::json!([a, b]),
        };
        model["merges"]
            .as_array_mut()
            .ok_or_else(|| err("no merges list".into()))?
            .push(m);
    }
    let text = serde_json::to_string(&json).map_err(|e| err(e.to_string()))?;
    tokenizers::Tokenizer::from_bytes(text.as_bytes())
        .map_err(|e| err(format!("the extended tokenizer does not load: {e}")))?;
    Ok(text)
}

/// `w` (V, H) with one row per learned token appended.
pub fn extended_rows(
    w: &candle_core::Tensor,
    learned: &Learned,
    init: Init,
) -> candle_core::Result<candle_core::Tensor> {
    use candle_core::{DType, Tensor};
    let dtype = w.dtype();
    let w32 = w.to_dtype(DType::F32)?;
    let mean_all = w32.mean_keepdim(0)?;
    let rows: Vec<Tensor> = learned
        .pieces
        .iter()
        .map(|ids| match init {
            Init::Mean => Ok(mean_all.clone()),
            Init::Fvt => {
                let idx = Tensor::new(ids.as_slice(), w.device())?;
                w32.index_select(&idx, 0)?.mean_keepdim(0)
            }
        })
        .collect::<candle_core::Result<_>>()?;
    let mut all = vec![w.clone()];
    if !rows.is_empty() {
        all.push(Tensor::cat(&rows, 0)?.to_dtype(dtype)?);
    }
    Tensor::cat(&all, 0)
}

/// What an extension did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExtendSummary {
    pub vocabulary_before: usize,
    pub vocabulary_after: usize,
    pub added: usize,
}

/// Writes `source` with the learned tokens as an HF directory at `out`: tokenizer.json with the
/// merges appended, embeddings (and an untied head) with new rows from `init`, `vocab_size`
/// updated. New ids follow the embedding's last row.
pub fn save_extended(
    source: &crate::ModelSource,
    tok: &Tokenizer,
    learned: &Learned,
    init: Init,
    out: &std::path::Path,
    replace: bool,
) -> Result<ExtendSummary> {
    let dtype = super::trim::stored_dtype(source);
    let mut tensors = source.tensors(dtype)?;
    let mut rows = None;
    for (name, t) in tensors.iter_mut() {
        if !super::trim::is_vocab_matrix(name) {
            continue;
        }
        let wrap = |e: candle_core::Error| ModelError::tensor(&source.path, name, e);
        let n = t.dim(0).map_err(wrap)?;
        if rows.is_some_and(|r| r != n) {
            return Err(ModelError::tensor(
                &source.path,
                name,
                format!("{n} rows, the embeddings have {rows:?}"),
            ));
        }
        rows = Some(n);
        *t = extended_rows(t, learned, init).map_err(wrap)?;
    }
    let rows = rows.ok_or_else(|| ModelError::file(&source.path, "no embedding matrix"))?;
    if rows < tok.inner.get_vocab_size(true) {
        return Err(ModelError::file(
            &source.path,
            format!(
                "{rows} embedding rows for a tokenizer of {}",
                tok.inner.get_vocab_size(true)
            ),
        ));
    }
    let mut config = source.config_json_for(dtype);
    config["vocab_size"] = (rows + learned.merges.len()).into();
    let mut files = Vec::new();
    for (name, text) in source.tokenizer_files()? {
        let text = match name {
            "tokenizer.json" => extended_tokenizer_json(tok, learned, rows as u32)?,
            _ => text,
        };
        files.push((name, text));
    }
    crate::save::save_hf_dir(out, &config, &tensors, &files, replace)?;
    Ok(ExtendSummary {
        vocabulary_before: rows,
        vocabulary_after: rows + learned.merges.len(),
        added: learned.merges.len(),
    })
}
