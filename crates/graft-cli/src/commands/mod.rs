pub mod bench;
pub mod classify;
pub mod convert;
pub mod generate;
pub mod init_model;
pub mod quickstart;
pub mod score;
pub mod train;
