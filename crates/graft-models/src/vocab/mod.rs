//! Vocabulary adaptation (`graft vocab …`): measuring how a tokenizer cuts a corpus, the number
//! vocabulary-adaptation papers report before and after changing a vocabulary.

pub mod extend;
pub mod omp;
pub mod report;
pub mod train;
pub mod transplant;
pub mod trim;
