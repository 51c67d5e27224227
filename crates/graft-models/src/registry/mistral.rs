//! Mistral (`MistralForCausalLM`): Llama with a sliding attention window on every layer.

use serde::Deserialize;

use crate::config::{CommonFields, DecoderConfig};

#[derive(Debug, Clone, Deserialize)]
pub struct MistralConfig {
    #[serde(flatten)]
    pub common: CommonFields,
    #[serde(default = "super::llama::silu")]
    pub hidden_act: String,
    #[serde(default)]
    pub sliding_window: Option<usize>,
}

impl MistralConfig {
    pub fn to_decoder(&self) -> Result<DecoderConfig, String> {
        let mut d = self.common.llama_like("mistral", &self.hidden_act)?;
        for layer in &mut d.layers {
            layer.sliding_window = self.sliding_window;
        }
        Ok(d)
    }
}
