//! Rebuilds a HF tokenizer from GGUF metadata (`tokenizer.ggml.*`), the way transformers' GGUF
//! loader does: `gpt2` → byte-level BPE with the stored merges and the pre-tokenizer named by
//! `tokenizer.ggml.pre`; `llama` → SentencePiece-style BPE with byte fallback whose merges are derived
//! from the piece scores (transformers' `generate_merges`).

use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::{
    byte_fallback::ByteFallback, byte_level::ByteLevel as ByteLevelDecoder, fuse::Fuse,
};
use tokenizers::decoders::{sequence::Sequence as DecoderSequence, strip::Strip, DecoderWrapper};
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::{
    byte_level::ByteLevel, digits::Digits, sequence::Sequence, split::Split,
};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::tokenizer::Tokenizer;
use crate::{ModelError, Result};

/// llama.cpp token types.
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn meta<'a>(content: &'a Content, key: &str) -> Option<&'a Value> {
    content.metadata.get(key)
}

fn meta_u32(content: &Content, key: &str) -> Option<u32> {
    meta(content, key).and_then(|v| {
        v.to_u32()
            .ok()
            .or_else(|| v.to_i32().ok().map(|x| x as u32))
    })
}

fn meta_bool(content: &Content, key: &str) -> Option<bool> {
    meta(content, key).and_then(|v| v.to_bool().ok())
}

fn string_array(path: &Path, content: &Content, key: &str) -> Result<Vec<String>> {
    let values = meta(content, key)
        .ok_or_else(|| ModelError::config(path, key, "missing"))?
        .to_vec()
        .map_err(|e| ModelError::config(path, key, e))?;
    values
        .iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|e| ModelError::config(path, key, e))
        })
        .collect()
}

fn number_array(path: &Path, content: &Content, key: &str) -> Result<Option<Vec<f64>>> {
    let Some(v) = meta(content, key) else {
        return Ok(None);
    };
    let values = v.to_vec().map_err(|e| ModelError::config(path, key, e))?;
    values
        .iter()
        .map(|v| {
            // Matched, not tried in turn: each failed conversion is an error that captures a
            // backtrace when RUST_BACKTRACE is set (seconds over a 262k-token vocabulary).
            use candle_core::quantized::gguf_file::Value as V;
            Ok(match v {
                V::F64(x) => *x,
                V::F32(x) => f64::from(*x),
                V::I32(x) => f64::from(*x),
                V::U32(x) => f64::from(*x),
                other => {
                    let e = format!("{:?} where a number was expected", other.value_type());
                    return Err(ModelError::config(path, key, e));
                }
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Merges of a SentencePiece vocabulary, from its scores: every split of a piece into two pieces
/// that are both in the vocabulary, ordered by the merged piece's score (highest first), ties by
/// the lengths of the parts — transformers' `generate_merges`. `vocab` maps each piece to its
/// last position (as a map built from `tokens` in order does). Pieces are split in parallel and
/// sorted with a stable parallel sort (Gemma-3's 262k pieces give 515k merges).
pub fn merges_from_scores(
    tokens: &[String],
    scores: &[f64],
    vocab: &tokenizers::models::bpe::Vocab,
) -> Vec<(String, String)> {
    use rayon::prelude::*;
    // Python iterates a dict built from (piece, score) pairs: a later duplicate piece keeps the
    // first position but the last score (the one at its last position).
    let first: Vec<bool> = match vocab.len() == tokens.len() {
        true => vec![true; tokens.len()],
        false => {
            let mut seen = std::collections::HashSet::new();
            tokens.iter().map(|t| seen.insert(t.as_str())).collect()
        }
    };
    // (left, right, sort key: the piece's score and the parts' lengths in characters). The key
    // is computed once per merge, not in every comparison.
    type Merge<'a> = (&'a str, &'a str, (f64, usize, usize));
    let mut merges: Vec<Merge> = tokens
        .par_iter()
        .zip(&first)
        .filter(|(_, &first)| first)
        .flat_map_iter(|(piece, _)| {
            let score = scores[vocab[piece] as usize];
            let total = piece.chars().count();
            let mut local: Vec<(u32, u32, Merge)> = piece
                .char_indices()
                .skip(1)
                .enumerate()
                .filter_map(|(n, (i, _))| {
                    let (l, r) = (&piece[..i], &piece[i..]);
                    let (li, ri) = (*vocab.get(l)?, *vocab.get(r)?);
                    Some((li, ri, (l, r, (score, n + 1, total - n - 1))))
                })
                .collect();
            local.sort_by_key(|&(li, ri, _)| (li, ri));
            local.into_iter().map(|(_, _, m)| m)
        })
        .collect();
    // Stable, descending: equal keys keep their order, as Python's sorted(reverse=True) does.
    merges.par_sort_by(|a, b| b.2.partial_cmp(&a.2).unwrap_or(std::cmp::Ordering::Equal));
    merges
        .into_par_iter()
        .map(|(l, r, _)| (l.to_string(), r.to_string()))
        .collect()
}

/// `tokenizer.ggml.merges` as llama.cpp splits them: at the first space after the first
/// character (a merge may start with a space).
fn gguf_merges(path: &Path, content: &Content) -> Result<Vec<(String, String)>> {
    string_array(path, content, "tokenizer.ggml.merges")?
        .into_iter()
        .map(
            |m| match m.char_indices().skip(1).find(|(_, c)| *c == ' ') {
                Some((i, _)) => Ok((m[..i].to_string(), m[i + 1..].to_string())),
                None => Err(ModelError::config(
                    path,
                    "tokenizer.ggml.merges",
                    format!("merge `{m}` has no space"),
                )),
            },
        )
        .collect()
}

/// GPT-2's pre-tokenizer regex, as llama.cpp spells it.
const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const QWEN35_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
// Copied code point for code point from llama.cpp (escaped: some are compatibility characters
// that editors would normalise, e.g. U+1F7D, U+212A).
const DEEPSEEK_LLM_LETTERS: &str = "\\s?[A-Za-z\u{b5}\u{c0}-\u{d6}\u{d8}-\u{f6}\u{f8}-\u{1ba}\u{1bc}-\u{1bf}\u{1c4}-\u{293}\u{295}-\u{2af}\u{370}-\u{373}\u{376}\u{377}\u{37b}-\u{37d}\u{37f}\u{386}\u{388}-\u{38a}\u{38c}\u{38e}-\u{3a1}\u{3a3}-\u{3f5}\u{3f7}-\u{481}\u{48a}-\u{52f}\u{531}-\u{556}\u{10a0}-\u{10c5}\u{13a0}-\u{13f5}\u{13f8}-\u{13fd}\u{1c90}-\u{1cba}\u{1cbd}-\u{1cbf}\u{1d00}-\u{1d2b}\u{1d6b}-\u{1d77}\u{1d79}-\u{1d9a}\u{1e00}-\u{1f15}\u{1f18}-\u{1f1d}\u{1f20}-\u{1f45}\u{1f48}-\u{1f4d}\u{1f50}-\u{1f57}\u{1f59}\u{1f5b}\u{1f5d}\u{1f5f}-\u{1f7d}\u{1f80}-\u{1fb4}\u{1fb6}-\u{1fbc}\u{1fbe}\u{1fc2}-\u{1fc4}\u{1fc6}-\u{1fcc}\u{1fd0}-\u{1fd3}\u{1fd6}-\u{1fdb}\u{1fe0}-\u{1fec}\u{1ff2}-\u{1ff4}\u{1ff6}-\u{1ffc}\u{2102}\u{2107}\u{210a}-\u{2113}\u{2115}\u{2119}-\u{211d}\u{2124}\u{2126}\u{2128}\u{212a}-\u{212d}\u{212f}-\u{2134}\u{2139}\u{213c}-\u{213f}\u{2145}-\u{2149}\u{214e}\u{2183}\u{2184}\u{2c00}-\u{2c7b}\u{2c7e}-\u{2ce4}\u{2ceb}-\u{2cee}\u{2cf2}\u{2cf3}\u{a640}-\u{a66d}\u{a680}-\u{a69b}\u{a722}-\u{a76f}\u{a771}-\u{a787}\u{a78b}-\u{a78e}\u{ab70}-\u{abbf}\u{fb00}-\u{fb06}\u{fb13}-\u{fb17}\u{ff21}-\u{ff3a}\u{ff41}-\u{ff5a}\u{10400}-\u{1044f}\u{104b0}-\u{104d3}\u{104d8}-\u{104fb}\u{10c80}-\u{10cb2}\u{10cc0}-\u{10cf2}\u{118a0}-\u{118df}\u{1e900}-\u{1e943}]+";
const DEEPSEEK_LLM_PUNCT: &str =
    "\\s?[!-/:-~\u{ff01}-\u{ff0f}\u{ff1a}-\u{ff5e}\u{2018}-\u{201f}\u{3000}-\u{3002}]+";
const DEEPSEEK_CJK: &str = "[\u{4e00}-\u{9fa5}\u{800}-\u{4e00}\u{ac00}-\u{d7ff}]+";

/// A WordPiece piece as HF writes it, from llama.cpp's GGUF form: its converter gives a
/// word-initial piece a phantom space (`▁piece`), strips the `##` of a continuation, and leaves
/// `[bracketed]` specials as they are.
fn hf_wordpiece(piece: &str) -> String {
    if let Some(word) = piece.strip_prefix('▁') {
        word.to_string()
    } else if piece.starts_with('[') && piece.ends_with(']') {
        piece.to_string()
    } else {
        format!("##{piece}")
    }
}

/// BERT's uncased WordPiece with `[CLS] $A [SEP]` (pairs `[CLS] $A [SEP] $B [SEP]`) around the
/// text when special tokens are asked for, as transformers' BertTokenizerFast.
fn bert_wordpiece(
    path: &Path,
    content: &Content,
    tokens: &[String],
) -> Result<tokenizers::Tokenizer> {
    use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::normalizers::BertNormalizer;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    let err = |key: &'static str| move |e| ModelError::config(path, key, e);
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (hf_wordpiece(t), i as u32))
        .collect();
    let piece = |key: &'static str, fallback: &str| {
        meta_u32(content, key)
            .and_then(|i| tokens.get(i as usize).cloned())
            .unwrap_or_else(|| fallback.to_string())
    };
    let model = WordPiece::builder()
        .vocab(vocab)
        .unk_token(piece("tokenizer.ggml.unknown_token_id", "[UNK]"))
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(err("tokenizer.ggml.tokens"))?;
    let mut t = tokenizers::Tokenizer::new(model);
    t.with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
        .map_err(err("tokenizer.ggml.model"))?;
    t.with_pre_tokenizer(Some(BertPreTokenizer));
    t.with_decoder(Some(WordPieceDecoder::new("##".into(), true)));
    let ids = [
        "tokenizer.ggml.cls_token_id",
        "tokenizer.ggml.seperator_token_id",
    ]
    .map(|k| meta_u32(content, k));
    if let [Some(cls), Some(sep)] = ids {
        let (cls_t, sep_t) = (
            piece("tokenizer.ggml.cls_token_id", ""),
            piece("tokenizer.ggml.seperator_token_id", ""),
        );
        let post = TemplateProcessing::builder()
            .try_single(format!("{cls_t} $A {sep_t}"))
            .and_then(|b| b.try_pair(format!("{cls_t} $A {sep_t} $B:1 {sep_t}:1")))
            .map_err(|e| ModelError::config(path, "tokenizer.ggml.cls_token_id", e))?
            .special_tokens(vec![(cls_t, cls), (sep_t, sep)])
            .build()
            .map_err(|e| ModelError::config(path, "tokenizer.ggml.cls_token_id", e))?;
        t.with_post_processor(Some(post));
    }
    Ok(t)
}

/// The byte-level pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre`: its regexes applied in
/// turn (each splits the pieces of the one before, matches and gaps both kept), then the bytes
/// mapped as GPT-2 does. An unknown `pre` is an error: another regex would give other ids.
fn byte_level_pre_tokenizer(pre: &str) -> std::result::Result<PreTokenizerWrapper, String> {
    let splits = |res: &[&str]| -> std::result::Result<PreTokenizerWrapper, String> {
        let mut steps: Vec<PreTokenizerWrapper> = res
            .iter()
            .map(|re| {
                Split::new(
                    tokenizers::pre_tokenizers::split::SplitPattern::Regex((*re).into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map(Into::into)
                .map_err(|e| format!("`{pre}`: regex `{re}`: {e}"))
            })
            .collect::<std::result::Result<_, _>>()?;
        steps.push(ByteLevel::new(false, true, false).into());
        Ok(Sequence::new(steps).into())
    };
    Ok(match pre {
        "gpt2" | "default" | "gpt-2" | "mpt" | "olmo" | "jais" | "trillion" => {
            ByteLevel::new(false, true, true).into()
        }
        // SmolLM's own tokenizer.json: single digits, then GPT-2's byte-level regex.
        "smollm" => Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])
        .into(),
        "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            splits(&[r"\p{N}", GPT2_REGEX])?
        }
        "llama-bpe" | "llama3" | "llama-v3" | "dbrx" | "smaug-bpe" => splits(&[LLAMA3_REGEX])?,
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "hunyuan" => splits(&[QWEN2_REGEX])?,
        "qwen35" => splits(&[QWEN35_REGEX])?,
        "falcon" => splits(&[r"[\p{P}\$\+<=>\^~\|`]+", GPT2_REGEX, "[0-9][0-9][0-9]"])?,
        "deepseek-coder" => splits(&[
            r"[\r\n]",
            r"\s?\p{L}+",
            r"\s?\p{P}+",
            DEEPSEEK_CJK,
            r"\p{N}",
        ])?,
        "deepseek-llm" => splits(&[
            r"[\r\n]",
            DEEPSEEK_LLM_LETTERS,
            DEEPSEEK_LLM_PUNCT,
            r"\s+$",
            DEEPSEEK_CJK,
            r"\p{N}+",
        ])?,
        other => {
            return Err(format!(
                "`{other}` is not known to graft (its pre-tokenizer regex decides the token ids)"
            ))
        }
    })
}

/// The tokenizer stored in a GGUF file, plus warnings about approximations made.
pub fn tokenizer_from_gguf(path: &Path, content: &Content) -> Result<(Tokenizer, Vec<String>)> {
    let model = meta(content, "tokenizer.ggml.model")
        .ok_or_else(|| {
            ModelError::config(
                path,
                "tokenizer.ggml.model",
                "missing: the file carries no tokenizer",
            )
        })?
        .to_string()
        .map_err(|e| ModelError::config(path, "tokenizer.ggml.model", e))?
        .clone();
    let tokens = string_array(path, content, "tokenizer.ggml.tokens")?;
    let types = number_array(path, content, "tokenizer.ggml.token_type")?
        .unwrap_or_default()
        .into_iter()
        .map(|t| t as i64)
        .collect::<Vec<_>>();
    let bos_id = meta_u32(content, "tokenizer.ggml.bos_token_id");
    let eos_id = meta_u32(content, "tokenizer.ggml.eos_token_id");
    let token = |id: Option<u32>| id.and_then(|i| tokens.get(i as usize).cloned());
    let warnings = Vec::new();
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();

    let (mut inner, default_bos) = match model.as_str() {
        "gpt2" => {
            let merges = gguf_merges(path, content)?;
            let pre = meta(content, "tokenizer.ggml.pre")
                .and_then(|v| v.to_string().ok())
                .cloned()
                .unwrap_or_default();
            // Llama 3's tokenizer.json sets `ignore_merges`: a pre-token found whole in the vocabulary is
            // one token even when the merges would not build it (llama.cpp does the same for this type).
            let ignore_merges = matches!(pre.as_str(), "llama-bpe" | "llama3" | "llama-v3");
            let bpe = BPE::builder()
                .vocab_and_merges(vocab, merges)
                .ignore_merges(ignore_merges)
                .build()
                .map_err(|e| ModelError::config(path, "tokenizer.ggml.merges", e))?;
            let pre_tokenizer = byte_level_pre_tokenizer(&pre)
                .map_err(|e| ModelError::config(path, "tokenizer.ggml.pre", e))?;
            let mut t = tokenizers::Tokenizer::new(bpe);
            t.with_pre_tokenizer(Some(pre_tokenizer));
            t.with_decoder(Some(ByteLevelDecoder::default()));
            (t, false)
        }
        "llama" => {
            let scores =
                number_array(path, content, "tokenizer.ggml.scores")?.ok_or_else(|| {
                    ModelError::config(
                        path,
                        "tokenizer.ggml.scores",
                        "missing (needed for a `llama` tokenizer)",
                    )
                })?;
            if scores.len() != tokens.len() {
                return Err(ModelError::config(
                    path,
                    "tokenizer.ggml.scores",
                    format!("{} scores for {} tokens", scores.len(), tokens.len()),
                ));
            }
            let merges = merges_from_scores(&tokens, &scores, &vocab);
            let unk = token(meta_u32(content, "tokenizer.ggml.unknown_token_id"))
                .unwrap_or_else(|| "<unk>".into());
            let bpe = BPE::builder()
                .vocab_and_merges(vocab, merges)
                .unk_token(unk)
                .fuse_unk(true)
                .byte_fallback(true)
                .build()
                .map_err(|e| ModelError::config(path, "tokenizer.ggml.tokens", e))?;
            let prefix = meta_bool(content, "tokenizer.ggml.add_space_prefix").unwrap_or(true);
            let mut normalizers = Vec::new();
            if prefix {
                normalizers.push(Prepend::new("▁".into()).into());
            }
            normalizers.push(Replace::new(" ", "▁").expect("literal pattern").into());
            let mut decoders: Vec<DecoderWrapper> = vec![
                Replace::new("▁", " ").expect("literal pattern").into(),
                ByteFallback::new().into(),
                Fuse::new().into(),
            ];
            if prefix {
                decoders.push(Strip::new(' ', 1, 0).into());
            }
            let mut t = tokenizers::Tokenizer::new(bpe);
            t.with_normalizer(Some(NormalizerSequence::new(normalizers)))
                .map_err(|e| ModelError::config(path, "tokenizer.ggml.add_space_prefix", e))?;
            t.with_decoder(Some(DecoderSequence::new(decoders)));
            (t, true)
        }
        // BERT's WordPiece (llama.cpp's `bert`, e.g. bge): llama.cpp always lower-cases, splits on
        // whitespace and punctuation (CJK characters alone) and matches the longest piece first.
        "bert" => (bert_wordpiece(path, content, &tokens)?, false),
        // Gemma 4: SentencePiece-style BPE with stored merges (llama.cpp's `gemma4`): spaces
        // become ▁ with no prefix, newline runs are pieces of their own (one token when the
        // vocabulary has the run), merges run on characters, and what no token covers falls
        // back to <0xXX> byte tokens.
        "gemma4" => {
            let bpe = BPE::builder()
                .vocab_and_merges(vocab, gguf_merges(path, content)?)
                .byte_fallback(true)
                .ignore_merges(true)
                .build()
                .map_err(|e| ModelError::config(path, "tokenizer.ggml.merges", e))?;
            let mut t = tokenizers::Tokenizer::new(bpe);
            t.with_normalizer(Some(Replace::new(" ", "▁").expect("literal pattern")))
                .map_err(|e| ModelError::config(path, "tokenizer.ggml.model", e))?;
            let newlines = Split::new(
                tokenizers::pre_tokenizers::split::SplitPattern::Regex("\n+".into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .expect("built-in regex compiles");
            t.with_pre_tokenizer(Some(newlines));
            t.with_decoder(Some(DecoderSequence::new(vec![
                Replace::new("▁", " ").expect("literal pattern").into(),
                ByteFallback::new().into(),
                Fuse::new().into(),
            ])));
            (t, true)
        }
        other => {
            return Err(ModelError::config(
                path,
                "tokenizer.ggml.model",
                format!("`{other}` is not supported (gpt2, llama, gemma4, bert)"),
            ))
        }
    };

    // Control tokens are matched whole and skipped when decoding with skip_special; user-defined
    // ones are matched whole but kept.
    let added: Vec<AddedToken> = tokens
        .iter()
        .zip(types.iter())
        .filter(|(_, &ty)| ty == CONTROL || ty == USER_DEFINED)
        .map(|(t, &ty)| AddedToken::from(t.clone(), ty == CONTROL).normalized(false))
        .collect();
    let (special, normal): (Vec<_>, Vec<_>) = added.into_iter().partition(|t| t.special);
    let err = |e| ModelError::config(path, "tokenizer.ggml.token_type", e);
    inner.add_special_tokens(special).map_err(err)?;
    inner.add_tokens(normal).map_err(err)?;

    let add_bos = meta_bool(content, "tokenizer.ggml.add_bos_token").unwrap_or(default_bos);
    let add_eos = meta_bool(content, "tokenizer.ggml.add_eos_token").unwrap_or(false);
    let (bos_token, eos_token) = (token(bos_id), token(eos_id));
    if add_bos || add_eos {
        let mut single = Vec::new();
        let mut specials = Vec::new();
        if let (true, Some(b), Some(id)) = (add_bos, &bos_token, bos_id) {
            single.push(b.clone());
            specials.push((b.clone(), id));
        }
        single.push("$A".to_string());
        if let (true, Some(e), Some(id)) = (add_eos, &eos_token, eos_id) {
            single.push(e.clone());
            specials.push((e.clone(), id));
        }
        let post = TemplateProcessing::builder()
            .try_single(single.join(" "))
            .map_err(|e| ModelError::config(path, "tokenizer.ggml.add_bos_token", e))?
            .special_tokens(specials)
            .build()
            .map_err(|e| ModelError::config(path, "tokenizer.ggml.add_bos_token", e))?;
        inner.with_post_processor(Some(post));
    }
    let chat_template = meta(content, "tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
        .cloned();
    Ok((
        Tokenizer {
            inner,
            bos_token,
            eos_token,
            bos_id,
            eos_id,
            chat_template,
            source: path.to_path_buf(),
        },
        warnings,
    ))
}

#[cfg(test)]
mod pre_tests {
    #[test]
    fn an_unknown_pre_tokenizer_is_an_error_naming_it() {
        let e = super::byte_level_pre_tokenizer("tekken").err().unwrap();
        assert!(e.contains("tekken"), "{e}");
        for known in [
            "gpt2",
            "smollm",
            "llama-bpe",
            "qwen2",
            "qwen35",
            "falcon",
            "deepseek-coder",
        ] {
            assert!(super::byte_level_pre_tokenizer(known).is_ok(), "{known}");
        }
    }
}
