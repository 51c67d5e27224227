pub mod bench;
pub mod convert;
pub mod generate;
pub mod quickstart;
pub mod score;
pub mod train;
