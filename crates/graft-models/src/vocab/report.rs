//! How a tokenizer cuts a corpus: tokens per word (fertility), bytes and characters per token,
//! the share of words cut into several tokens ("continued words"), the share of tokens that are
//! byte-fallback pieces (`<0xXX>`) or the unknown token, and how much of the vocabulary the corpus
//! uses — the figures PTT5, idT5, Bllossom and Glot500 compare before and after adapting one.
//! Words are maximal runs of non-whitespace characters. A token belongs to the first word its
//! byte span (offsets into the original text) overlaps; a token with an empty span, or over
//! whitespace only (a lone `▁`), belongs to none. Special tokens are not added.

use serde::Serialize;

use crate::tokenizer::Tokenizer;

/// Running counts over a corpus; [`Counter::finish`] turns them into a [`Report`].
pub struct Counter<'a> {
    tok: &'a Tokenizer,
    /// Per vocabulary id: a byte-fallback piece (`<0x00>`…`<0xFF>`).
    byte_piece: Vec<bool>,
    unk: Option<u32>,
    used: Vec<bool>,
    c: Report,
}

/// The figures for one tokenizer over one corpus.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    pub rows: u64,
    pub words: u64,
    pub tokens: u64,
    pub bytes: u64,
    pub chars: u64,
    /// Words cut into two or more tokens.
    pub split_words: u64,
    pub byte_fallback_tokens: u64,
    pub unknown_tokens: u64,
    pub vocabulary_size: u64,
    /// Distinct token ids the corpus uses.
    pub vocabulary_used: u64,
    pub tokens_per_word: f64,
    pub bytes_per_token: f64,
    pub chars_per_token: f64,
    pub split_word_share: f64,
    pub byte_fallback_share: f64,
    pub unknown_share: f64,
    pub vocabulary_used_share: f64,
}

/// A byte-fallback piece (`<0x00>`…`<0xFF>`).
pub(crate) fn is_byte_piece(p: &str) -> bool {
    p.len() == 6
        && p.starts_with("<0x")
        && p.ends_with('>')
        && p[3..5].chars().all(|c| c.is_ascii_hexdigit())
}

/// The byte spans of the words of `text` (maximal runs of non-whitespace).
fn word_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, ch) in text.char_indices() {
        match (ch.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, text.len()));
    }
    spans
}

impl<'a> Counter<'a> {
    pub fn new(tok: &'a Tokenizer) -> Self {
        let size = tok.inner.get_vocab_size(true);
        let mut byte_piece = vec![false; size];
        for (piece, id) in tok.inner.get_vocab(true) {
            if let Some(b) = byte_piece.get_mut(id as usize) {
                *b = is_byte_piece(&piece);
            }
        }
        let unk = match tok.inner.get_model() {
            tokenizers::ModelWrapper::BPE(m) => m.unk_token.clone(),
            tokenizers::ModelWrapper::WordPiece(m) => Some(m.unk_token.clone()),
            tokenizers::ModelWrapper::WordLevel(m) => Some(m.unk_token.clone()),
            tokenizers::ModelWrapper::Unigram(_) => None,
        }
        .and_then(|t| tok.inner.token_to_id(&t));
        Self {
            tok,
            byte_piece,
            unk,
            used: vec![false; size],
            c: Report {
                vocabulary_size: size as u64,
                ..Report::default()
            },
        }
    }

    /// Counts one row of text.
    pub fn add(&mut self, text: &str) -> crate::Result<()> {
        let enc = self.tok.inner.encode(text, false).map_err(|e| {
            crate::ModelError::file(&self.tok.source, format!("cannot encode: {e}"))
        })?;
        let words = word_spans(text);
        let mut per_word = vec![0u32; words.len()];
        for (&id, &(s, e)) in enc.get_ids().iter().zip(enc.get_offsets()) {
            if let Some(u) = self.used.get_mut(id as usize) {
                *u = true;
            }
            self.c.byte_fallback_tokens +=
                u64::from(self.byte_piece.get(id as usize) == Some(&true));
            self.c.unknown_tokens += u64::from(Some(id) == self.unk);
            // The first word that ends after the token starts, if the token reaches into it.
            let w = words.partition_point(|&(_, end)| end <= s);
            if e > s && w < words.len() && words[w].0 < e {
                per_word[w] += 1;
            }
        }
        self.c.rows += 1;
        self.c.words += words.len() as u64;
        self.c.tokens += enc.get_ids().len() as u64;
        self.c.bytes += text.len() as u64;
        self.c.chars += text.chars().count() as u64;
        self.c.split_words += per_word.iter().filter(|&&n| n >= 2).count() as u64;
        Ok(())
    }

    pub fn finish(mut self) -> Report {
        let c = &mut self.c;
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        c.vocabulary_used = self.used.iter().filter(|&&u| u).count() as u64;
        c.tokens_per_word = ratio(c.tokens, c.words);
        c.bytes_per_token = ratio(c.bytes, c.tokens);
        c.chars_per_token = ratio(c.chars, c.tokens);
        c.split_word_share = ratio(c.split_words, c.words);
        c.byte_fallback_share = ratio(c.byte_fallback_tokens, c.tokens);
        c.unknown_share = ratio(c.unknown_tokens, c.tokens);
        c.vocabulary_used_share = ratio(c.vocabulary_used, c.vocabulary_size);
        self.c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_runs_of_non_whitespace() {
        assert_eq!(word_spans("  ab c\tdé "), vec![(2, 4), (5, 6), (7, 10)]);
        assert_eq!(word_spans(""), vec![]);
        assert_eq!(word_spans("x"), vec![(0, 1)]);
        assert!(is_byte_piece("<0x0A>") && !is_byte_piece("<0x0G>") && !is_byte_piece("<unk>"));
    }
}
