//! Training a byte-level BPE tokenizer (GPT-2 / SmolLM style) with the `tokenizers` crate's trainer:
//! what `graft quickstart` uses to build a vocabulary from bundled text.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

use crate::DataError;

/// A byte-level BPE of `vocab_size` tokens (special tokens included, listed first so their ids are
/// 0, 1, …) learned from `texts`.
pub fn train_byte_level_bpe<I>(
    texts: I,
    vocab_size: usize,
    special_tokens: &[&str],
) -> Result<tokenizers::Tokenizer, DataError>
where
    I: Iterator<Item = String> + Send,
{
    let err = |e: tokenizers::Error| DataError::Template(format!("tokenizer training failed: {e}"));
    let specials: Vec<AddedToken> = special_tokens
        .iter()
        .map(|t| AddedToken::from(t.to_string(), true))
        .collect();
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut trainer = TrainerWrapper::BpeTrainer(trainer);
    let mut tokenizer = tokenizers::Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    tokenizer.train(&mut trainer, texts).map_err(err)?;
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_vocabulary_that_round_trips() {
        let text = "the quick brown fox jumps over the lazy dog. ".repeat(50);
        let t = train_byte_level_bpe(std::iter::once(text), 300, &["<|endoftext|>", "<|im_end|>"])
            .unwrap();
        assert_eq!(t.token_to_id("<|endoftext|>"), Some(0));
        assert_eq!(t.token_to_id("<|im_end|>"), Some(1));
        assert!(t.get_vocab_size(true) <= 300);
        let enc = t.encode("the lazy fox<|im_end|>", false).unwrap();
        assert!(
            enc.get_ids().len() < 10,
            "merges learned: {:?}",
            enc.get_tokens()
        );
        assert_eq!(*enc.get_ids().last().unwrap(), 1);
        assert_eq!(
            t.decode(enc.get_ids(), false).unwrap(),
            "the lazy fox<|im_end|>"
        );
    }
}
