//! A recipe's `[data]` section as TOML gives it: the row files or `[[data.tasks]]` with their
//! preprocessors, the mixture, and how rows are built (sequence length, packing, denoising,
//! sharding). graft-data turns it into rows (`rows::load_section`); graft-train's loader draws
//! from them with the mixture.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// The training rows; or give `[[data.tasks]]` for a mixture.
    #[serde(default)]
    pub train: Option<PathBuf>,
    /// A mixture of tasks (`name`, `train`, optional `eval` and `rate`), sampled per `[data.mixture]`.
    #[serde(default)]
    pub tasks: Vec<TaskSection>,
    #[serde(default)]
    pub mixture: Option<MixtureSection>,
    #[serde(default)]
    pub eval: Option<PathBuf>,
    #[serde(default = "max_seq_len")]
    pub max_seq_len: usize,
    #[serde(default)]
    pub packing: bool,
    /// Encoder-decoder models: turn `{"text"}` rows into T5 span-corruption pairs
    /// (`[data.span_corruption]` with noise_density, mean_noise_span_length); inputs are
    /// max_seq_len tokens long.
    #[serde(default)]
    pub span_corruption: Option<crate::span_corruption::SpanCorruption>,
    /// `{"text"}` rows through UL2's mixture of denoisers (`[data.ul2]`: optional `denoisers`,
    /// `rates`, `mode_tokens`); seq2seq rows for T5, the causal-LM form for decoders.
    #[serde(default)]
    pub ul2: Option<crate::ul2::Ul2>,
    /// Skip rows that do not parse or tokenize (counted, listed in manifest.json) instead of
    /// stopping at the first (`graft train --skip-bad-rows`).
    #[serde(default)]
    pub skip_bad_rows: bool,
    /// `[index, count]`: read only every count-th training row from row `index` on (0-based), so
    /// `count` processes — one per shard — together see each row once (`graft train --set data.shard=[0,4]`).
    #[serde(default)]
    pub shard: Option<[usize; 2]>,
}

fn max_seq_len() -> usize {
    1024
}

/// `[[data.tasks]]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSection {
    pub name: String,
    pub train: PathBuf,
    #[serde(default)]
    pub eval: Option<PathBuf>,
    /// Sampling weight; without it the mixture's temperature rule applies.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Row preprocessors run in order (`{ kind = "filter_regex", ... }`; graft-data's
    /// `preprocess` registry), between reading and tokenizing.
    #[serde(default)]
    pub preprocessors: Vec<serde_json::Value>,
    /// The fields each preprocessed row keeps (all must be present).
    #[serde(default)]
    pub features: Option<Vec<String>>,
}

/// `[data.mixture]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixtureSection {
    /// α of rate ∝ n^α for tasks without a rate (default 1: proportional to size).
    #[serde(default)]
    pub temperature: Option<f64>,
    /// From `step` on, sample with these rates (task name → weight; unnamed tasks get 0).
    #[serde(default)]
    pub switch: Vec<SwitchSection>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchSection {
    pub step: usize,
    pub rates: BTreeMap<String, f64>,
}
