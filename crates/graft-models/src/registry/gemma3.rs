//! Gemma 3 text (`Gemma3ForCausalLM`, `model_type = "gemma3_text"`): Gemma 2's sandwich blocks with
//! per-head QK-norm instead of attention soft-capping, and two rotary bases: local (sliding) layers use
//! `rope_local_base_freq` unscaled, global layers use `rope_theta` with `rope_scaling`. Five local
//! layers per global one unless `layer_types` says otherwise.

use serde::Deserialize;

use super::gemma::{gemma_act, gemma_like};
use crate::config::{BlockKind, CommonFields, DecoderConfig, QkNorm, Rope};

#[derive(Debug, Clone, Deserialize)]
pub struct Gemma3TextConfig {
    #[serde(flatten)]
    pub common: CommonFields,
    #[serde(default)]
    pub hidden_act: Option<String>,
    #[serde(default)]
    pub hidden_activation: Option<String>,
    #[serde(default = "query_pre_attn_scalar")]
    pub query_pre_attn_scalar: f64,
    #[serde(default)]
    pub attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    pub final_logit_softcapping: Option<f64>,
    #[serde(default = "sliding_window")]
    pub sliding_window: Option<usize>,
    #[serde(default = "sliding_window_pattern")]
    pub sliding_window_pattern: usize,
    #[serde(default = "rope_local_base_freq")]
    pub rope_local_base_freq: f64,
    #[serde(default)]
    pub attention_bias: bool,
}

fn query_pre_attn_scalar() -> f64 {
    256.0
}
fn sliding_window() -> Option<usize> {
    Some(4096)
}
fn sliding_window_pattern() -> usize {
    6
}
fn rope_local_base_freq() -> f64 {
    10_000.0
}

impl Gemma3TextConfig {
    pub fn to_decoder(&self) -> Result<DecoderConfig, String> {
        let act = gemma_act(&self.hidden_activation, &self.hidden_act);
        let mut d = gemma_like(&self.common, "gemma3_text", &act)?;
        d.block = BlockKind::Sandwich;
        d.qk_norm = QkNorm::PerHead;
        d.attn_scale = self.query_pre_attn_scalar.powf(-0.5);
        d.attn_softcap = self.attn_logit_softcapping;
        d.final_softcap = self.final_logit_softcapping;
        d.qkv_bias = self.attention_bias;
        d.o_bias = self.attention_bias;
        let pattern = self.sliding_window_pattern.max(1);
        let sliding = self.common.layer_types(|i| (i + 1) % pattern != 0)?;
        let global = self.common.rope(Some("full_attention"), 1_000_000.0)?;
        let local = match &self.common.rope_parameters {
            Some(p) if p.get("sliding_attention").is_some() => {
                self.common.rope(Some("sliding_attention"), 10_000.0)?
            }
            _ => Rope::new(self.rope_local_base_freq, d.head_dim, None)?,
        };
        for (layer, sliding) in d.layers.iter_mut().zip(sliding) {
            layer.sliding_window = if sliding { self.sliding_window } else { None };
            layer.rope = if sliding {
                local.clone()
            } else {
                global.clone()
            };
        }
        Ok(d)
    }
}
