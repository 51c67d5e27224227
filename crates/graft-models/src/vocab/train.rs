//! Tokenizer training (PTT5: a SentencePiece vocabulary for a new language): a BPE or Unigram
//! model learned from the corpus's word (pre-token) counts by the tokenizers crate's trainers,
//! the code transformers' `train_new_from_iterator` runs.
//! The pipeline around the model comes from a template: `--like MODEL` keeps that model's
//! normalizer, pre-tokenizer, post-processor, decoder, added tokens, unknown token and byte
//! fallback, so the result can replace its tokenizer; without it, GPT-2's byte-level BPE
//! (`<|endoftext|>`) or SentencePiece's Metaspace Unigram with T5's specials (`<pad>`, `</s>`,
//! `<unk>`). Added tokens come first, in their old order, then byte-fallback pieces, then the
//! learned vocabulary.
//! Counting is streamed and bounded: at most `cap` distinct words are held, with u64 counts;
//! past the cap the rarest are dropped (every count at or below a rising floor), so the counts of
//! the words kept are exact only while nothing was dropped (`approximate` says so).
//! Words are also split before every `▁` that follows a non-`▁`, even where the pipeline does not
//! pre-tokenize (Gemma's splits only at newlines), as SentencePiece's trainer does: no learned
//! piece joins two words.

use ahash::AHashMap;
use compact_str::CompactString;
use serde_json::{json, Value};
use tokenizers::{AddedToken, OffsetReferential, OffsetType, PreTokenizer};

use crate::{ModelError, Result};

/// The model to learn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bpe,
    Unigram,
}

/// Streamed, bounded word counts.
pub struct WordCounts {
    map: AHashMap<CompactString, u64>,
    cap: usize,
    floor: u64,
    pub words: u64,
}

impl WordCounts {
    /// Counts holding at most `cap` distinct words.
    pub fn new(cap: usize) -> Self {
        Self {
            map: AHashMap::new(),
            cap: cap.max(2),
            floor: 0,
            words: 0,
        }
    }

    /// Counts the words `tk`'s pipeline cuts `text` into (added tokens are left out).
    pub fn add_text(&mut self, tk: &tokenizers::Tokenizer, text: &str) -> Result<()> {
        let mut pre = tk
            .get_added_vocabulary()
            .extract_and_normalize(tk.get_normalizer(), text);
        if let Some(p) = tk.get_pre_tokenizer() {
            p.pre_tokenize(&mut pre)
                .map_err(|e| ModelError::Invalid(e.to_string()))?;
        }
        for (s, _, added) in pre.get_splits(OffsetReferential::Original, OffsetType::Byte) {
            if added.is_none() {
                split_words(s, |w| self.add(w));
            }
        }
        Ok(())
    }

    fn add(&mut self, word: &str) {
        self.words += 1;
        *self.map.entry(word.into()).or_default() += 1;
        while self.map.len() > self.cap {
            self.floor += 1;
            let floor = self.floor;
            self.map.retain(|_, c| *c > floor);
        }
    }

    /// Distinct words held.
    pub fn distinct(&self) -> usize {
        self.map.len()
    }

    /// Whether rare words were dropped to stay under the cap.
    pub fn approximate(&self) -> bool {
        self.floor > 0
    }
}

/// Calls `f` on `s` cut before every `▁` that follows another character than `▁`.
fn split_words(s: &str, mut f: impl FnMut(&str)) {
    let mut start = 0;
    let mut prev_space = true;
    for (i, c) in s.char_indices() {
        if c == '▁' && !prev_space && i > start {
            f(&s[start..i]);
            start = i;
        }
        prev_space = c == '▁';
    }
    if start < s.len() {
        f(&s[start..]);
    }
}

/// The tokenizer.json a pipeline without `--like` starts from (the model is replaced).
pub fn default_template(kind: Kind) -> Value {
    let special = |id: u32, s: &str| {
        json!({"id": id, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    match kind {
        Kind::Bpe => {
            let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false,
                                    "trim_offsets": true, "use_regex": true});
            json!({"version": "1.0", "truncation": null, "padding": null,
                "added_tokens": [special(0, "<|endoftext|>")],
                "normalizer": null, "pre_tokenizer": byte_level, "post_processor": byte_level,
                "decoder": byte_level,
                "model": {"type": "BPE", "dropout": null, "unk_token": null,
                          "continuing_subword_prefix": null, "end_of_word_suffix": null,
                          "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                          "vocab": {"<|endoftext|>": 0}, "merges": []}})
        }
        Kind::Unigram => {
            let metaspace = json!({"type": "Metaspace", "replacement": "▁",
                                   "prepend_scheme": "always", "split": true});
            let eos = json!({"SpecialToken": {"id": "</s>", "type_id": 0}});
            let seq = |id: &str| json!({"Sequence": {"id": id, "type_id": 0}});
            json!({"version": "1.0", "truncation": null, "padding": null,
                "added_tokens": [special(0, "<pad>"), special(1, "</s>"), special(2, "<unk>")],
                "normalizer": {"type": "Sequence", "normalizers": [
                    {"type": "NFKC"},
                    {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]},
                "pre_tokenizer": metaspace,
                "post_processor": {"type": "TemplateProcessing",
                    "single": [seq("A"), eos],
                    "pair": [seq("A"), eos, seq("B"), eos],
                    "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}},
                "decoder": metaspace,
                "model": {"type": "Unigram", "unk_id": 2, "byte_fallback": false,
                          "vocab": [["<pad>", 0.0], ["</s>", 0.0], ["<unk>", 0.0]]}})
        }
    }
}

/// A trained tokenizer.
pub struct Trained {
    /// tokenizer.json, checked to load.
    pub json: String,
    pub vocab_size: usize,
    /// Tokens placed ahead of the learned ones (added, byte-fallback, unknown).
    pub reserved: usize,
    /// The unknown token, if the model has one.
    pub unk_token: Option<String>,
}

/// What the template reserves ahead of the learned vocabulary.
struct Reserved {
    added: Vec<AddedToken>,
    /// Added tokens, byte-fallback pieces, the unknown token: the trainers' special tokens.
    all: Vec<AddedToken>,
    byte_fallback: bool,
    byte_level: bool,
    unk: Option<String>,
}

fn reserved(template: &Value, tk: &tokenizers::Tokenizer, kind: Kind) -> Reserved {
    let model = &template["model"];
    let mut by_id: Vec<_> = tk.get_added_tokens_decoder().into_iter().collect();
    by_id.sort_by_key(|(id, _)| *id);
    let added: Vec<AddedToken> = by_id.into_iter().map(|(_, t)| t).collect();
    let byte_fallback = model["byte_fallback"] == true;
    let byte_level = super::trim::byte_level(template);
    let mut unk = match model["type"].as_str() {
        Some("Unigram") => model["unk_id"]
            .as_u64()
            .and_then(|i| tk.id_to_token(i as u32)),
        _ => model["unk_token"].as_str().map(str::to_string),
    };
    // A Unigram without an unknown token cannot encode an unseen character.
    if kind == Kind::Unigram && unk.is_none() && !byte_fallback && !byte_level {
        unk = Some("<unk>".into());
    }
    let mut all = added.clone();
    let mut push = |s: &str| {
        if !all.iter().any(|t| t.content == s) {
            all.push(AddedToken::from(s.to_string(), true));
        }
    };
    if byte_fallback {
        (0..=255u8).for_each(|b| push(&format!("<0x{b:02X}>")));
    }
    if let Some(u) = &unk {
        push(u);
    }
    Reserved {
        added,
        all,
        byte_fallback,
        byte_level,
        unk,
    }
}

/// Learns a `vocab_size`-token model of `kind` from `counts` inside `template`'s pipeline
/// (`tk` is the template loaded).
pub fn train(
    template: &Value,
    tk: &tokenizers::Tokenizer,
    counts: &WordCounts,
    kind: Kind,
    vocab_size: usize,
) -> Result<Trained> {
    let r = reserved(template, tk, kind);
    let alphabet: ahash::AHashSet<char> = match r.byte_level {
        true => tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet()
            .into_iter()
            .collect(),
        false => Default::default(),
    };
    let floor = r.all.len() + alphabet.len();
    if vocab_size <= floor {
        let symbols = match alphabet.len() {
            0 => String::new(),
            n => format!(" and the {n} byte symbols"),
        };
        return Err(ModelError::Invalid(format!(
            "--vocab-size {vocab_size}: the reserved tokens (added, byte-fallback, unknown){symbols} alone take {floor}"
        )));
    }
    let fail = |e: String| match e.contains("not large enough") {
        true => ModelError::Invalid(format!(
            "--vocab-size {vocab_size}: below the corpus's characters plus the reserved tokens"
        )),
        false => ModelError::Invalid(format!("training: {e}")),
    };
    let (mut model, vocab) = match kind {
        Kind::Bpe => {
            let trainer = tokenizers::models::bpe::BpeTrainer::builder()
                .vocab_size(vocab_size)
                .special_tokens(r.all.clone())
                .initial_alphabet(alphabet.iter().copied().collect())
                .show_progress(false)
                .build();
            let mut bpe = tokenizers::models::bpe::BPE::default();
            crate::guard::catch("training", || trainer.do_train(&counts.map, &mut bpe))
                .map_err(fail)?
                .map_err(|e| fail(e.to_string()))?;
            let v = bpe.get_vocab();
            (
                serde_json::to_value(&bpe).map_err(|e| fail(e.to_string()))?,
                v,
            )
        }
        Kind::Unigram => {
            let trainer = tokenizers::models::unigram::UnigramTrainer::builder()
                .vocab_size(vocab_size as u32)
                .special_tokens(r.all.clone())
                .unk_token(r.unk.clone())
                .initial_alphabet(alphabet.iter().copied().collect())
                .show_progress(false)
                .build()
                .map_err(|e| fail(e.to_string()))?;
            let mut uni = tokenizers::models::unigram::Unigram::default();
            let sentences = unigram_sentences(counts);
            crate::guard::catch("training", || trainer.do_train(sentences, &mut uni))
                .map_err(fail)?
                .map_err(|e| fail(e.to_string()))?;
            let mut json = serde_json::to_value(&uni).map_err(|e| fail(e.to_string()))?;
            canonical_unigram(&mut json["vocab"], r.all.len());
            let v = json["vocab"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, p)| (p[0].as_str().unwrap_or_default().to_string(), i as u32))
                .collect();
            (json, v)
        }
    };
    if vocab.len() > vocab_size {
        return Err(ModelError::Invalid(format!(
            "--vocab-size {vocab_size}: the reserved tokens and the corpus's {} characters need {}",
            vocab.len() - r.all.len(),
            vocab.len()
        )));
    }
    let old = &template["model"];
    if old["type"] == model["type"] {
        let keys = ["dropout", "unk_token", "fuse_unk", "ignore_merges"];
        for k in keys.iter().filter(|k| old.get(**k).is_some()) {
            model[*k] = old[*k].clone();
        }
    }
    if kind == Kind::Bpe {
        model["unk_token"] = r.unk.clone().into();
    }
    model["byte_fallback"] = r.byte_fallback.into();
    let json = assemble(template, model, &vocab, &r.added)?;
    Ok(Trained {
        json,
        vocab_size: vocab.len(),
        reserved: r.all.len(),
        unk_token: r.unk,
    })
}

/// The step the Unigram trainer puts between the scores it gives characters its model lost.
const CHAR_PENALTY_STEP: f64 = 1e-4;

/// Makes a trained Unigram's pieces independent of hash order: the trainer gives the characters
/// its model lost evenly spaced scores from the lowest one in a hash set's order, and orders
/// equal scores that way too. Those characters (the single characters whose lowest scores are
/// spaced by that step) get the same scores in character order; then the pieces after the
/// `reserved` ones are sorted by score (descending), then piece.
fn canonical_unigram(vocab: &mut Value, reserved: usize) {
    let Some(pieces) = vocab.as_array_mut() else {
        return;
    };
    let mut learned: Vec<(String, f64)> = pieces
        .iter()
        .skip(reserved)
        .filter_map(|p| Some((p[0].as_str()?.to_string(), p[1].as_f64()?)))
        .collect();
    let mut chars: Vec<usize> = (0..learned.len())
        .filter(|&i| learned[i].0.chars().count() == 1)
        .collect();
    chars.sort_by(|&a, &b| learned[a].1.total_cmp(&learned[b].1));
    let spaced = |a: usize, b: usize| {
        let step: f64 = (learned[b].1 - learned[a].1).abs();
        (step - CHAR_PENALTY_STEP).abs() < 1e-9
    };
    let run = 1 + chars.windows(2).take_while(|w| spaced(w[0], w[1])).count();
    let run = &chars[..run.min(chars.len())];
    if run.len() > 1 {
        let scores: Vec<f64> = run.iter().map(|&i| learned[i].1).collect();
        let mut names: Vec<String> = run.iter().map(|&i| learned[i].0.clone()).collect();
        names.sort();
        for ((&i, c), s) in run.iter().zip(names).zip(scores) {
            learned[i] = (c, s);
        }
    }
    learned.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    pieces.truncate(reserved);
    pieces.extend(learned.into_iter().map(|(p, s)| json!([p, s])));
}

/// The Unigram trainer's (word, count) pairs; it sums counts in u32, so they are scaled down
/// (each at least 1) when their total would not fit.
fn unigram_sentences(counts: &WordCounts) -> Vec<(String, u32)> {
    let total: u64 = counts.map.values().sum();
    let scale = total.div_ceil(1 << 31).max(1);
    let mut s: Vec<(String, u32)> = counts
        .map
        .iter()
        .map(|(w, c)| (w.to_string(), (c / scale).clamp(1, u32::MAX as u64) as u32))
        .collect();
    // The map's order is random per process; training reads the words in this order.
    s.sort_unstable();
    s
}

/// `template` with `model`, its added tokens and post-processor ids renumbered to `vocab`.
fn assemble(
    template: &Value,
    model: Value,
    vocab: &std::collections::HashMap<String, u32>,
    added: &[AddedToken],
) -> Result<String> {
    let mut out = template.clone();
    out["model"] = model;
    let mut renumber = std::collections::HashMap::new();
    for a in out["added_tokens"].as_array_mut().into_iter().flatten() {
        let content = a["content"].as_str().unwrap_or_default().to_string();
        let new = vocab.get(&content).copied();
        if let (Some(old), Some(new)) = (a["id"].as_u64(), new) {
            renumber.insert(old as u32, new);
        }
        a["id"] = new.map_or(Value::Null, Value::from);
    }
    debug_assert!(added.iter().all(|t| vocab.contains_key(&t.content)));
    super::trim::remap_post_processor(&mut out["post_processor"], &renumber);
    let text = serde_json::to_string(&out).map_err(|e| ModelError::Invalid(e.to_string()))?;
    tokenizers::Tokenizer::from_bytes(text.as_bytes())
        .map_err(|e| ModelError::Invalid(format!("the trained tokenizer does not load: {e}")))?;
    Ok(text)
}

/// tokenizer_config.json for a trained tokenizer: the template's BOS/EOS/chat template (or the
/// default pipeline's specials), read by transformers' generic fast tokenizer.
pub fn tokenizer_config(like: Option<&crate::Tokenizer>, kind: Kind, unk: Option<&str>) -> Value {
    let mut c = serde_json::Map::new();
    c.insert("tokenizer_class".into(), "PreTrainedTokenizerFast".into());
    match (like, kind) {
        (Some(t), _) => {
            for (k, v) in [("bos_token", &t.bos_token), ("eos_token", &t.eos_token)] {
                if let Some(v) = v {
                    c.insert(k.into(), v.clone().into());
                }
            }
            if let Some(t) = &t.chat_template {
                c.insert("chat_template".into(), t.clone().into());
            }
        }
        (None, Kind::Bpe) => {
            for k in ["bos_token", "eos_token"] {
                c.insert(k.into(), "<|endoftext|>".into());
            }
        }
        (None, Kind::Unigram) => {
            c.insert("eos_token".into(), "</s>".into());
            c.insert("pad_token".into(), "<pad>".into());
        }
    }
    if let Some(u) = unk {
        c.insert("unk_token".into(), u.into());
    }
    Value::Object(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_before_a_word_start() {
        let mut got = Vec::new();
        split_words("▁▁il▁gatto▁", |w| got.push(w.to_string()));
        assert_eq!(got, ["▁▁il", "▁gatto", "▁"]);
        got.clear();
        split_words("Ġcasa", |w| got.push(w.to_string()));
        assert_eq!(got, ["Ġcasa"]);
    }

    #[test]
    fn the_cap_drops_the_rarest_words() {
        let tk = tokenizers::Tokenizer::from_bytes(
            default_template(Kind::Unigram).to_string().as_bytes(),
        )
        .unwrap();
        let mut c = WordCounts::new(3);
        c.add_text(&tk, "a a a b b c").unwrap();
        assert!(!c.approximate());
        c.add_text(&tk, "d").unwrap();
        assert!(c.approximate());
        assert!(c.distinct() <= 3);
        assert_eq!(c.map.get("▁a"), Some(&3));
        assert_eq!(c.map.get("▁b"), Some(&2));
        assert_eq!(c.words, 7);
    }
}
