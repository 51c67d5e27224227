//! Tokenizer transplant (mergekit-tokensurgeon's job): a model gets another tokenizer, and its
//! embeddings (and an untied head) one row per new token.
//! Each new token is read as bytes in its tokenizer's spelling (GPT-2's byte symbols,
//! SentencePiece's `▁` and `<0xXX>` pieces, or plain text) and spelled again in the model's:
//! - a token the old vocabulary has (or an added token with the same content, or the new
//!   tokenizer's BOS/EOS/UNK/PAD for the old one's) copies its row;
//! - `fvt`: otherwise the mean of the old rows of the old BPE's tokenization of it (FVT);
//! - `omp`: otherwise the combination of at most `k` shared tokens' rows that orthogonal matching
//!   pursuit finds for the token in a donor model with the new tokenizer (tokensurgeon's method:
//!   the donor's row of the token ≈ Σ c·donor rows of shared tokens; the new row = Σ c·old rows);
//! - tokens neither way can build (text the old vocabulary cannot spell) get the mean of all rows.
//! Shapes: old rows (V_old, H) → new rows (V_new, H); a donor's rows (V_new, H_d).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::tokenizer::Tokenizer;
use crate::{ModelError, Result};

/// How a vocabulary spells text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// GPT-2's byte-to-character map.
    ByteLevel,
    /// SentencePiece: `▁` for a space, `<0xXX>` for a byte.
    Metaspace,
    Plain,
}

/// The spelling `tok`'s pipeline uses.
pub fn spelling(tok: &Tokenizer) -> Spelling {
    let json = tok.inner.to_string(false).unwrap_or_default();
    if json.contains("\"ByteLevel\"") {
        Spelling::ByteLevel
    } else if json.contains('▁') {
        Spelling::Metaspace
    } else {
        Spelling::Plain
    }
}

/// The bytes a token stands for.
fn bytes_of(sp: Spelling, token: &str, symbols: &HashMap<char, u8>) -> Option<Vec<u8>> {
    match sp {
        Spelling::ByteLevel => token.chars().map(|c| symbols.get(&c).copied()).collect(),
        Spelling::Metaspace => {
            let hex = token.strip_prefix("<0x").and_then(|t| t.strip_suffix('>'));
            match hex.filter(|h| h.len() == 2) {
                Some(h) => u8::from_str_radix(h, 16).ok().map(|b| vec![b]),
                None => Some(token.replace('▁', " ").into_bytes()),
            }
        }
        Spelling::Plain => Some(token.as_bytes().to_vec()),
    }
}

/// `bytes` spelled as a vocabulary of spelling `sp` spells them (None: not UTF-8 for a
/// character-level spelling).
fn spell(sp: Spelling, bytes: &[u8], symbols: &[String]) -> Option<String> {
    match sp {
        Spelling::ByteLevel => Some(
            bytes
                .iter()
                .map(|&b| symbols[b as usize].as_str())
                .collect(),
        ),
        Spelling::Metaspace => std::str::from_utf8(bytes).ok().map(|s| s.replace(' ', "▁")),
        Spelling::Plain => std::str::from_utf8(bytes).ok().map(str::to_string),
    }
}

/// How each new token's row is made.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Copy(u32),
    /// The mean of these old rows.
    Pieces(Vec<u32>),
    /// Left to OMP (the old spelling's pieces are the fallback without a donor).
    Omp(Vec<u32>),
    Mean,
}

/// Counts of [`Source`] kinds, for the summary.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Plan {
    pub copied: usize,
    pub fvt: usize,
    pub omp: usize,
    pub mean: usize,
    #[serde(skip)]
    pub sources: Vec<Source>,
}

/// Where each of `new`'s tokens takes its row from `old`'s; `omp` leaves the unmatched ones to
/// OMP.
pub fn plan(old: &Tokenizer, new: &Tokenizer, omp: bool) -> Result<Plan> {
    let (sp_old, sp_new) = (spelling(old), spelling(new));
    let symbols = super::trim::byte_symbols();
    let back: HashMap<char, u8> = symbols
        .iter()
        .enumerate()
        .filter_map(|(b, s)| Some((s.chars().next()?, b as u8)))
        .collect();
    let old_vocab = old.inner.get_vocab(true);
    let new_added = new.inner.get_added_tokens_decoder();
    let roles = roles(old, new);
    let old_unk = unk(old).and_then(|u| old.token_to_id(&u));
    let n = new.inner.get_vocab_size(true);
    let mut p = Plan::default();
    for id in 0..n as u32 {
        let Some(token) = new.inner.id_to_token(id) else {
            p.sources.push(Source::Mean);
            continue;
        };
        let source = if new_added.contains_key(&id) {
            match old_vocab.get(&token).or(roles.get(&token)) {
                Some(&o) => Source::Copy(o),
                None => Source::Mean,
            }
        } else {
            let bytes = bytes_of(sp_new, &token, &back);
            let spelled = bytes.as_ref().and_then(|b| spell(sp_old, b, &symbols));
            // Part of a character: a byte-fallback vocabulary spells it byte by byte.
            let by_bytes = || -> Option<Vec<u32>> {
                let b = bytes.as_ref()?;
                b.iter()
                    .map(|x| old_vocab.get(&format!("<0x{x:02X}>")).copied())
                    .collect()
            };
            match spelled {
                Some(s) => match old_vocab.get(&s) {
                    Some(&o) => Source::Copy(o),
                    None => match old_pieces(old, &s, old_unk) {
                        Some(ids) if omp => Source::Omp(ids),
                        Some(ids) => Source::Pieces(ids),
                        None => Source::Mean,
                    },
                },
                None => match by_bytes() {
                    Some(ids) if omp => Source::Omp(ids),
                    Some(ids) => Source::Pieces(ids),
                    None => Source::Mean,
                },
            }
        };
        match &source {
            Source::Copy(_) => p.copied += 1,
            Source::Pieces(_) => p.fvt += 1,
            Source::Omp(_) => p.omp += 1,
            Source::Mean => p.mean += 1,
        }
        p.sources.push(source);
    }
    if p.copied == 0 {
        return Err(ModelError::file(
            &new.source,
            "shares no token with the model's tokenizer; nothing to anchor the new rows",
        ));
    }
    Ok(p)
}

/// The new tokenizer's BOS/EOS/UNK/PAD tokens → the old tokenizer's ids for the same roles.
fn roles(old: &Tokenizer, new: &Tokenizer) -> HashMap<String, u32> {
    let pairs = [
        (new.bos_token.clone(), old.bos_id),
        (new.eos_token.clone(), old.eos_id),
        (unk(new), unk(old).and_then(|u| old.token_to_id(&u))),
    ];
    pairs
        .into_iter()
        .filter_map(|(t, id)| Some((t?, id?)))
        .collect()
}

/// The model's unknown token, if it has one.
fn unk(t: &Tokenizer) -> Option<String> {
    let j: Value = serde_json::from_str(&t.inner.to_string(false).ok()?).ok()?;
    j["model"]["unk_token"].as_str().map(str::to_string)
}

/// The old BPE's tokenization of a token spelled its way; None when it cannot spell it (an
/// unknown piece).
fn old_pieces(old: &Tokenizer, s: &str, unk: Option<u32>) -> Option<Vec<u32>> {
    let ids: Vec<u32> = tokenizers::Model::tokenize(old.inner.get_model(), s)
        .ok()?
        .iter()
        .map(|t| t.id)
        .collect();
    (!ids.is_empty() && !ids.iter().any(|i| Some(*i) == unk)).then_some(ids)
}

/// The new rows (V_new, H) from the old ones by `plan`; OMP tokens use `donor` ((V_new, H_d),
/// the new tokenizer's own model's rows) with `k` anchors, or their pieces' mean without one.
pub fn rows(
    old: &Tensor,
    plan: &Plan,
    donor: Option<&Tensor>,
    k: usize,
) -> candle_core::Result<Tensor> {
    let dtype = old.dtype();
    let w = old.to_dtype(DType::F32)?;
    let mean = w.mean(0)?;
    let anchors: Vec<(u32, u32)> = plan
        .sources
        .iter()
        .enumerate()
        .filter_map(|(new, s)| match s {
            Source::Copy(o) => Some((new as u32, *o)),
            _ => None,
        })
        .collect();
    let omp_rows = match donor {
        Some(d) => omp_rows(&w, d, plan, &anchors, k)?,
        None => HashMap::new(),
    };
    let mut out = Vec::with_capacity(plan.sources.len());
    for (id, s) in plan.sources.iter().enumerate() {
        let row = match s {
            Source::Copy(o) => w.get(*o as usize)?,
            Source::Mean => mean.clone(),
            Source::Omp(_) if omp_rows.contains_key(&id) => omp_rows[&id].clone(),
            Source::Pieces(ids) | Source::Omp(ids) => {
                let idx = Tensor::new(ids.as_slice(), &Device::Cpu)?;
                w.index_select(&idx, 0)?.mean(0)?
            }
        };
        out.push(row);
    }
    Tensor::stack(&out, 0)?.to_dtype(dtype)
}

/// OMP for every token planned so: its donor row as a combination of the anchors' donor rows,
/// applied to their old rows.
fn omp_rows(
    w: &Tensor,
    donor: &Tensor,
    plan: &Plan,
    anchors: &[(u32, u32)],
    k: usize,
) -> candle_core::Result<HashMap<usize, Tensor>> {
    let donor = donor.to_dtype(DType::F32)?;
    let new_ids: Vec<u32> = anchors.iter().map(|a| a.0).collect();
    let old_ids: Vec<u32> = anchors.iter().map(|a| a.1).collect();
    let dict = donor.index_select(&Tensor::new(new_ids.as_slice(), &Device::Cpu)?, 0)?;
    let base = w.index_select(&Tensor::new(old_ids.as_slice(), &Device::Cpu)?, 0)?;
    let ids: Vec<usize> = (0..plan.sources.len())
        .filter(|&i| matches!(plan.sources[i], Source::Omp(_)))
        .collect();
    let idx: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
    let targets = donor.index_select(&Tensor::new(idx.as_slice(), &Device::Cpu)?, 0)?;
    let fits = super::omp::omp(&dict, &targets, k)?;
    let mut out = HashMap::new();
    for (id, (picked, coef)) in ids.into_iter().zip(fits) {
        let rows = base.index_select(&Tensor::new(picked.as_slice(), &Device::Cpu)?, 0)?;
        let c = Tensor::new(coef.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        out.insert(id, c.matmul(&rows)?.squeeze(0)?);
    }
    Ok(out)
}

/// What a transplant did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TransplantSummary {
    pub vocabulary_before: usize,
    pub vocabulary_after: usize,
    #[serde(flatten)]
    pub plan: Plan,
}

/// The new tokenizer's files: a folder's own, or those a GGUF's vocabulary gives.
fn tokenizer_files(new: &Tokenizer, path: &std::path::Path) -> Result<Vec<(&'static str, String)>> {
    const NAMES: [&str; 4] = [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
    ];
    if path.is_dir() {
        let mut out = Vec::new();
        for name in NAMES {
            let p = path.join(name);
            if p.exists() {
                out.push((
                    name,
                    std::fs::read_to_string(&p).map_err(|e| ModelError::file(&p, e))?,
                ));
            }
        }
        return Ok(out);
    }
    let json = new
        .inner
        .to_string(true)
        .map_err(|e| ModelError::file(path, e))?;
    let config = super::train::tokenizer_config(Some(new), super::train::Kind::Bpe, None);
    Ok(vec![
        ("tokenizer.json", json),
        (
            "tokenizer_config.json",
            serde_json::to_string_pretty(&config).unwrap_or_default(),
        ),
    ])
}

/// Old id → new id for the ids config and generation files name: the same token, or the same
/// role (BOS, EOS).
fn id_map(old: &Tokenizer, new: &Tokenizer, ids: &[u32]) -> HashMap<u32, u32> {
    ids.iter()
        .filter_map(|&o| {
            let s = old.inner.id_to_token(o)?;
            let n = new.token_to_id(&s).or(match Some(o) {
                x if x == old.bos_id => new.bos_id,
                x if x == old.eos_id => new.eos_id,
                _ => None,
            })?;
            Some((o, n))
        })
        .collect()
}

/// Writes `source` with the tokenizer at `new_path` as an HF directory at `out`: embeddings and
/// an untied head rebuilt by `plan` (OMP rows from `donor`'s matching matrices with `k`
/// anchors), `vocab_size` and the config's and generation config's token ids moved to the new
/// tokenizer's (an id it has no token for is dropped), the new tokenizer's files.
#[allow(clippy::too_many_arguments)]
pub fn save_transplanted(
    source: &crate::ModelSource,
    old: &Tokenizer,
    new: &Tokenizer,
    new_path: &std::path::Path,
    plan: Plan,
    donor: Option<&crate::ModelSource>,
    k: usize,
    out: &std::path::Path,
    replace: bool,
) -> Result<TransplantSummary> {
    let dtype = super::trim::stored_dtype(source);
    let mut tensors = source.tensors(dtype)?;
    let donor_tensors = donor.map(|d| d.tensors(DType::F32)).transpose()?;
    let mut before = 0;
    for (name, t) in tensors.iter_mut() {
        if !super::trim::is_vocab_matrix(name) {
            continue;
        }
        before = t
            .dim(0)
            .map_err(|e| ModelError::tensor(&source.path, name, e))?;
        // A donor's tied head is its embeddings.
        let d = donor_tensors.as_ref().and_then(|d| {
            d.get(name).or_else(|| {
                d.iter()
                    .find(|(n, _)| n.ends_with("embed_tokens.weight"))
                    .map(|x| x.1)
            })
        });
        if let (Some(d), Some(_)) = (d, donor) {
            if d.dim(0).ok() != Some(plan.sources.len()) {
                return Err(ModelError::tensor(
                    &donor.map(|d| d.path.clone()).unwrap_or_default(),
                    name,
                    format!(
                        "{:?} rows for a tokenizer of {}",
                        d.dims(),
                        plan.sources.len()
                    ),
                ));
            }
        }
        *t = rows(t, &plan, d, k).map_err(|e| ModelError::tensor(&source.path, name, e))?;
    }
    let mut config = source.config_json_for(dtype);
    config["vocab_size"] = plan.sources.len().into();
    let mut files = tokenizer_files(new, new_path)?;
    let named = super::trim::named_ids(&config);
    let map = id_map(old, new, &named);
    super::trim::remap_or_drop_ids(&mut config, &map);
    if let Some((_, text)) = source
        .tokenizer_files()?
        .into_iter()
        .find(|(n, _)| *n == "generation_config.json")
    {
        let mut g: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::file(&source.path, format!("generation_config.json: {e}")))?;
        let map = id_map(old, new, &super::trim::named_ids(&g));
        super::trim::remap_or_drop_ids(&mut g, &map);
        files.push((
            "generation_config.json",
            serde_json::to_string_pretty(&g).unwrap_or(text),
        ));
    }
    crate::save::save_hf_dir(out, &config, &tensors, &files, replace)?;
    Ok(TransplantSummary {
        vocabulary_before: before,
        vocabulary_after: plan.sources.len(),
        plan,
    })
}
