//! Llama 2/3 (`LlamaForCausalLM`), also SmolLM2: the reference reading of [`CommonFields`].
//! Pre-norm blocks, SwiGLU MLP, RoPE with optional `linear`/`llama3` scaling, GQA, optional biases.

use serde::Deserialize;

use crate::config::{CommonFields, DecoderConfig};

#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    #[serde(flatten)]
    pub common: CommonFields,
    #[serde(default = "silu")]
    pub hidden_act: String,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
}

pub(crate) fn silu() -> String {
    "silu".into()
}

impl LlamaConfig {
    pub fn to_decoder(&self) -> Result<DecoderConfig, String> {
        let mut d = self.common.llama_like("llama", &self.hidden_act)?;
        d.qkv_bias = self.attention_bias;
        d.o_bias = self.attention_bias;
        d.mlp_bias = self.mlp_bias;
        Ok(d)
    }
}
