//! Vocabulary extension (Bllossom, Glot500): new tokens learned as BPE merges on a corpus on top
//! of the existing ones, appended after them, so encoding runs the same BPE (no added tokens
//! matched outside it) and every text first takes the old merges, then the new ones.
//! Learning: the corpus is tokenized by the old tokenizer, its tokens grouped by pre-token
//! (word), and the most frequent adjacent pair within a word (ties: the smaller pair of ids) is
//! merged, `add` times; pairs with a byte-fallback piece or an added token, pairs whose right
//! part starts a word (`▁`), and pairs whose concatenation is already in the vocabulary, are not
//! merged.
//! New rows: `fvt` = the mean of the old rows of the new token's old tokenization (FVT, Gee et
//! al. 2022), `mean` = the mean of all old rows, `normal` = drawn from a normal with the
//! old rows' mean and 1e-9 times their covariance (transformers' `mean_resizing`; the mean alone
//! where that covariance is not positive definite, as there). Old rows stay bit-identical.
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
    /// With this seed.
    Normal(u64),
}

/// The learned merges, and the new tokens they make with the old ids each is made of (a merge
/// whose result is already a token adds no new one).
pub struct Learned {
    pub merges: Vec<(String, String)>,
    pub tokens: Vec<String>,
    pub pieces: Vec<Vec<u32>>,
}

/// Learns up to `add` merges; fewer only when the corpus offers no more pairs (the caller
/// decides whether that is an error).
pub fn learn(tok: &Tokenizer, texts: &[String], add: usize) -> Result<Learned> {
    require_bpe(tok)?;
    let err = |e: String| ModelError::file(&tok.source, e);
    let vocab = tok.inner.get_vocab(true);
    let (mut strings, added) = id_strings(tok, &vocab);
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
    let (mut merges, mut tokens) = (Vec::new(), Vec::new());
    let known: HashSet<String> = vocab.keys().cloned().collect();
    let base = strings.len() as u32;
    let mut blocked: HashSet<(u32, u32)> = HashSet::new();
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
        tokens.push(s.clone());
        merges.push((strings[a as usize].clone(), strings[b as usize].clone()));
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
    let pieces = old_pieces(tok, &tokens)?;
    Ok(Learned {
        merges,
        tokens,
        pieces,
    })
}

/// Each token's old tokenization (FVT's pieces): the old BPE model run on the token as the
/// vocabulary spells it, so no normalizer or pre-tokenizer adds a word start.
fn old_pieces(tok: &Tokenizer, tokens: &[String]) -> Result<Vec<Vec<u32>>> {
    tokens
        .iter()
        .map(|t| {
            tokenizers::Model::tokenize(tok.inner.get_model(), t)
                .map(|v| v.iter().map(|x| x.id).collect())
                .map_err(|e| ModelError::file(&tok.source, format!("`{t}`: {e}")))
        })
        .collect()
}

/// Merges that build each of `tokens` (as the vocabulary spells them: `Ġgatto`, `▁gatto`):
/// the old model's segmentation of the token, then the merges added so far, then new merges
/// joining what is left from the left. Intermediate results become tokens too; tokens already
/// in the vocabulary are skipped.
pub fn learn_tokens(tok: &Tokenizer, tokens: &[String]) -> Result<Learned> {
    require_bpe(tok)?;
    let err = |t: &str, m: &str| ModelError::file(&tok.source, format!("--tokens: `{t}`: {m}"));
    let vocab = tok.inner.get_vocab(true);
    let (mut strings, added) = id_strings(tok, &vocab);
    let base = strings.len() as u32;
    let mut ids_of: HashMap<String, u32> = vocab.clone().into_iter().collect();
    let mut rank: HashMap<(u32, u32), (usize, u32)> = HashMap::new();
    let mut out = Learned {
        merges: Vec::new(),
        tokens: Vec::new(),
        pieces: Vec::new(),
    };
    for t in tokens.iter().filter(|t| !vocab.contains_key(*t)) {
        let mut ids: Vec<u32> = tokenizers::Model::tokenize(tok.inner.get_model(), t)
            .map_err(|e| err(t, &e.to_string()))?
            .iter()
            .map(|x| x.id)
            .collect();
        if ids
            .iter()
            .any(|&i| added.contains(&i) || super::report::is_byte_piece(&strings[i as usize]))
        {
            return Err(err(
                t,
                "spelled with byte-fallback pieces or added tokens; merges cannot build it",
            ));
        }
        // The merges added so far apply first, lowest rank first, as BPE would apply them.
        while let Some((i, (_, id))) = ids
            .windows(2)
            .enumerate()
            .filter_map(|(i, p)| rank.get(&(p[0], p[1])).map(|r| (i, *r)))
            .min_by_key(|(_, r)| r.0)
        {
            ids.splice(i..i + 2, [id]);
        }
        while ids.len() > 1 {
            let (a, b) = (ids[0], ids[1]);
            let s = format!("{}{}", strings[a as usize], strings[b as usize]);
            let id = match ids_of.get(&s) {
                Some(&id) => id,
                None => {
                    let id = strings.len() as u32;
                    out.tokens.push(s.clone());
                    strings.push(s.clone());
                    ids_of.insert(s, id);
                    id
                }
            };
            rank.insert((a, b), (out.merges.len(), id));
            out.merges
                .push((strings[a as usize].clone(), strings[b as usize].clone()));
            ids.splice(0..2, [id]);
        }
    }
    out.pieces = old_pieces(tok, &out.tokens)?;
    // An old merge can take part once a merge builds an old token: the result decides.
    let json = extended_tokenizer_json(tok, &out, base)?;
    let extended = tokenizers::Tokenizer::from_bytes(json.as_bytes())
        .map_err(|e| ModelError::file(&tok.source, e))?;
    for t in tokens {
        let n = tokenizers::Model::tokenize(extended.get_model(), t).map_or(0, |v| v.len());
        if n != 1 {
            return Err(err(t, "the extended merges do not build it as one token"));
        }
    }
    Ok(out)
}

/// Each id's token string (empty where the vocabulary skips an id) and the added tokens' ids.
fn id_strings(tok: &Tokenizer, vocab: &HashMap<String, u32>) -> (Vec<String>, HashSet<u32>) {
    let mut strings = vec![String::new(); vocab.values().max().map_or(0, |m| *m as usize + 1)];
    for (s, &i) in vocab {
        strings[i as usize] = s.clone();
    }
    let added = tok
        .inner
        .get_added_tokens_decoder()
        .keys()
        .copied()
        .collect();
    (strings, added)
}

/// New tokens are merges: only a BPE model has them.
fn require_bpe(tok: &Tokenizer) -> Result<()> {
    match tok.inner.get_model() {
        tokenizers::ModelWrapper::BPE(_) => Ok(()),
        other => {
            let kind = match other {
                tokenizers::ModelWrapper::WordPiece(_) => "WordPiece",
                tokenizers::ModelWrapper::Unigram(_) => "Unigram",
                _ => "WordLevel",
            };
            Err(ModelError::file(
                &tok.source,
                format!("extending supports BPE tokenizers; this one is {kind}"),
            ))
        }
    }
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
    for (n, t) in learned.tokens.iter().enumerate() {
        model["vocab"][t] = (first + n as u32).into();
    }
    for (a, b) in &learned.merges {
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
    if let Init::Normal(seed) = init {
        let rows = normal_rows(&w32, &mean_all, learned.pieces.len(), seed)?;
        return Tensor::cat(&[w.clone(), rows.to_dtype(dtype)?], 0);
    }
    let rows: Vec<Tensor> = learned
        .pieces
        .iter()
        .map(|ids| match init {
            Init::Mean | Init::Normal(_) => Ok(mean_all.clone()),
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

/// `n` rows drawn from N(mean, 1e-9·Σ), Σ the covariance of `w`'s rows (f32, (V, H)); `n`
/// copies of the mean where Σ has no Cholesky factor.
fn normal_rows(
    w: &candle_core::Tensor,
    mean: &candle_core::Tensor,
    n: usize,
    seed: u64,
) -> candle_core::Result<candle_core::Tensor> {
    use rand::{Rng, SeedableRng};
    let (v, h) = w.dims2()?;
    let centered = w.broadcast_sub(mean)?;
    let cov = (centered.t()?.matmul(&centered)? / v as f64)?;
    let cov: Vec<f64> = cov
        .flatten_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_vec1()?;
    let mu: Vec<f64> = mean
        .flatten_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_vec1()?;
    let Some(l) = cholesky(&cov, h) else {
        return mean.repeat((n, 1));
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n * h);
    let scale = 1e-9f64.sqrt();
    for _ in 0..n {
        // Box–Muller: two uniforms give one standard normal draw.
        let z: Vec<f64> = (0..h)
            .map(|_| {
                let (a, b): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
                (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
            })
            .collect();
        for i in 0..h {
            let lz: f64 = (0..=i).map(|k| l[i * h + k] * z[k]).sum();
            out.push((mu[i] + scale * lz) as f32);
        }
    }
    candle_core::Tensor::from_vec(out, (n, h), w.device())
}

/// The lower Cholesky factor of the symmetric `a` (h×h, row-major), or None when `a` is not
/// positive definite.
fn cholesky(a: &[f64], h: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; h * h];
    for i in 0..h {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * h + k] * l[j * h + k]).sum();
            let x = a[i * h + j] - s;
            if i == j {
                if x <= 0.0 || !x.is_finite() {
                    return None;
                }
                l[i * h + i] = x.sqrt();
            } else {
                l[i * h + j] = x / l[j * h + j];
            }
        }
    }
    Some(l)
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
    config["vocab_size"] = (rows + learned.tokens.len()).into();
    // Where the new rows start, for `[train] new_rows_only`.
    config["graft_vocab_extended_from"] = rows.into();
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
        vocabulary_after: rows + learned.tokens.len(),
        added: learned.tokens.len(),
    })
}
