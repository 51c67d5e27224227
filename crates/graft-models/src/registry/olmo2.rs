//! OLMo 2 (`Olmo2ForCausalLM`): post-norm blocks (`h += norm(attn(h))`, `h += norm(mlp(h))`, no
//! input norms) and QK-norm over the whole q/k projection width, before the heads are split.

use serde::Deserialize;

use crate::config::{BlockKind, CommonFields, DecoderConfig, QkNorm};

#[derive(Debug, Clone, Deserialize)]
pub struct Olmo2Config {
    #[serde(flatten)]
    pub common: CommonFields,
    #[serde(default = "super::llama::silu")]
    pub hidden_act: String,
    #[serde(default)]
    pub attention_bias: bool,
}

impl Olmo2Config {
    pub fn to_decoder(&self) -> Result<DecoderConfig, String> {
        let mut d = self.common.llama_like("olmo2", &self.hidden_act)?;
        d.block = BlockKind::PostNorm;
        d.qk_norm = QkNorm::Full;
        d.qkv_bias = self.attention_bias;
        d.o_bias = self.attention_bias;
        Ok(d)
    }
}
