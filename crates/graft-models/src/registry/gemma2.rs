//! Gemma 2 (`Gemma2ForCausalLM`): Gemma with sandwich norms, attention-logit and final-logit
//! soft-capping, `query_pre_attn_scalar` scaling, and sliding-window layers alternating with global ones
//! (even layers slide unless `layer_types` says otherwise).

use serde::Deserialize;

use super::gemma::{gemma_act, gemma_like};
use crate::config::{BlockKind, CommonFields, DecoderConfig};

#[derive(Debug, Clone, Deserialize)]
pub struct Gemma2Config {
    #[serde(flatten)]
    pub common: CommonFields,
    #[serde(default)]
    pub hidden_act: Option<String>,
    #[serde(default)]
    pub hidden_activation: Option<String>,
    #[serde(default = "query_pre_attn_scalar")]
    pub query_pre_attn_scalar: f64,
    #[serde(default = "attn_softcap")]
    pub attn_logit_softcapping: Option<f64>,
    #[serde(default = "final_softcap")]
    pub final_logit_softcapping: Option<f64>,
    #[serde(default = "sliding_window")]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub attention_bias: bool,
}

fn query_pre_attn_scalar() -> f64 {
    256.0
}
fn attn_softcap() -> Option<f64> {
    Some(50.0)
}
fn final_softcap() -> Option<f64> {
    Some(30.0)
}
fn sliding_window() -> Option<usize> {
    Some(4096)
}

impl Gemma2Config {
    pub fn to_decoder(&self) -> Result<DecoderConfig, String> {
        let act = gemma_act(&self.hidden_activation, &self.hidden_act);
        let mut d = gemma_like(&self.common, "gemma2", &act)?;
        d.block = BlockKind::Sandwich;
        d.attn_scale = self.query_pre_attn_scalar.powf(-0.5);
        d.attn_softcap = self.attn_logit_softcapping;
        d.final_softcap = self.final_logit_softcapping;
        d.qkv_bias = self.attention_bias;
        d.o_bias = self.attention_bias;
        let sliding = self.common.layer_types(|i| i % 2 == 0)?;
        for (layer, sliding) in d.layers.iter_mut().zip(sliding) {
            layer.sliding_window = if sliding { self.sliding_window } else { None };
        }
        Ok(d)
    }
}
