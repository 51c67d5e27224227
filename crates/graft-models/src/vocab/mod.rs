//! Vocabulary adaptation (`graft vocab …`): measuring how a tokenizer cuts a corpus (report),
//! training a tokenizer for a new language (train), growing one with merges (extend), cutting one
//! down to a corpus (trim), and giving a model another tokenizer (transplant, with OMP in omp.rs),
//! each with the embedding rows to match.

pub mod extend;
pub mod omp;
pub mod report;
pub mod train;
pub mod transplant;
pub mod trim;
