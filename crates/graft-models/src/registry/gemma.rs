//! Gemma (`GemmaForCausalLM`): Llama with `(1 + w)` RMSNorm, GeGLU (tanh GELU), embeddings scaled by
//! `sqrt(hidden_size)` and tied embeddings by default.

use serde::Deserialize;

use crate::config::{CommonFields, DecoderConfig, NormKind};

#[derive(Debug, Clone, Deserialize)]
pub struct GemmaConfig {
    #[serde(flatten)]
    pub common: CommonFields,
    #[serde(default)]
    pub hidden_act: Option<String>,
    #[serde(default)]
    pub hidden_activation: Option<String>,
    #[serde(default)]
    pub attention_bias: bool,
}

/// Gemma's activation: `hidden_activation` wins over the legacy `hidden_act`, as in transformers.
pub(crate) fn gemma_act(activation: &Option<String>, act: &Option<String>) -> String {
    activation
        .clone()
        .or(act.clone())
        .unwrap_or_else(|| "gelu_pytorch_tanh".into())
}

/// The changes every Gemma generation makes to the Llama reading.
pub(crate) fn gemma_like(
    common: &CommonFields,
    model_type: &str,
    act: &str,
) -> Result<DecoderConfig, String> {
    let mut d = common.llama_like(model_type, act)?;
    d.norm = NormKind::OnePlus;
    d.embed_scale = Some((common.hidden_size as f64).sqrt());
    d.tie_word_embeddings = common.tie_word_embeddings.unwrap_or(true);
    Ok(d)
}

impl GemmaConfig {
    pub fn to_decoder(&self) -> Result<DecoderConfig, String> {
        // Gemma 1 checkpoints say `"hidden_act": "gelu"` but were trained with tanh GELU; transformers
        // runs them with `gelu_pytorch_tanh`, and so does graft.
        let act = match gemma_act(&self.hidden_activation, &self.hidden_act).as_str() {
            "gelu" => "gelu_pytorch_tanh".to_string(),
            other => other.to_string(),
        };
        let mut d = gemma_like(&self.common, "gemma", &act)?;
        d.qkv_bias = self.attention_bias;
        d.o_bias = self.attention_bias;
        Ok(d)
    }
}
