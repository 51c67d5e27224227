//! Qwen2 (`Qwen2ForCausalLM`): Llama with biases on q/k/v (not o), and an optional sliding window on
//! the layers from `max_window_layers` on when `use_sliding_window` is set.

use serde::Deserialize;

use crate::config::{CommonFields, DecoderConfig};

#[derive(Debug, Clone, Deserialize)]
pub struct Qwen2Config {
    #[serde(flatten)]
    pub common: CommonFields,
    #[serde(default = "super::llama::silu")]
    pub hidden_act: String,
    #[serde(default)]
    pub use_sliding_window: bool,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default = "max_window_layers")]
    pub max_window_layers: usize,
}

fn max_window_layers() -> usize {
    28
}

impl Qwen2Config {
    pub fn to_decoder(&self) -> Result<DecoderConfig, String> {
        let mut d = self.common.llama_like("qwen2", &self.hidden_act)?;
        d.qkv_bias = true;
        let window = self.sliding_window.filter(|_| self.use_sliding_window);
        let sliding = self
            .common
            .layer_types(|i| window.is_some() && i >= self.max_window_layers)?;
        for (layer, sliding) in d.layers.iter_mut().zip(sliding) {
            layer.sliding_window = if sliding { window } else { None };
        }
        Ok(d)
    }
}
