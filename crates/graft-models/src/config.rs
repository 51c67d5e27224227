//! The decoder description every family's `config.json` is turned into.
//!
//! Each family file (`registry/llama.rs`, `registry/gemma2.rs`, …) holds a serde mirror of its HF `config.json` and a
//! `to_decoder` that states, field by field, how that family differs from Llama. The shared
//! implementation in `decoder.rs` reads only this struct.

use serde::Deserialize;

/// Where the norms sit in a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// `h += attn(norm(h)); h += mlp(norm(h))` (Llama, Mistral, Qwen2, Gemma).
    PreNorm,
    /// Pre- and post-norms around both sub-blocks (Gemma 2/3 "sandwich").
    Sandwich,
    /// `h += norm(attn(h)); h += norm(mlp(h))` (OLMo 2).
    PostNorm,
}

/// How an RMSNorm applies its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// `w * x̂` with `x̂` cast back to the input dtype first (Llama).
    Plain,
    /// `(1 + w) * x̂` computed in f32 (Gemma; the checkpoint stores `w`, not `1 + w`).
    OnePlus,
}

/// Where QK-norm applies, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNorm {
    None,
    /// One RMSNorm of size `head_dim` shared by all heads (Gemma 3).
    PerHead,
    /// One RMSNorm over the whole projection, `heads * head_dim` wide (OLMo 2).
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// `gelu_pytorch_tanh` / `gelu_new`.
    GeluTanh,
    /// exact erf GELU.
    Gelu,
}

impl Activation {
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "silu" | "swish" => Some(Self::Silu),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Some(Self::GeluTanh),
            "gelu" => Some(Self::Gelu),
            _ => None,
        }
    }
}

/// HF `rope_scaling` (`rope_type` or the older `type` key).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RopeScaling {
    #[serde(alias = "type")]
    pub rope_type: String,
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
    /// Only inside transformers 5.x `rope_parameters`.
    #[serde(default)]
    pub rope_theta: Option<f64>,
}

/// Rotary embedding of one layer: the inverse frequencies, already scaled.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    pub inv_freq: Vec<f64>,
}

impl Rope {
    /// Mirrors transformers' `ROPE_INIT_FUNCTIONS` for `default`, `linear` and `llama3`.
    pub fn new(theta: f64, head_dim: usize, scaling: Option<&RopeScaling>) -> Result<Self, String> {
        let base: Vec<f64> = (0..head_dim / 2)
            .map(|i| 1.0 / theta.powf((2 * i) as f64 / head_dim as f64))
            .collect();
        let Some(s) = scaling else {
            return Ok(Self { inv_freq: base });
        };
        if s.rope_type == "default" {
            return Ok(Self { inv_freq: base });
        }
        let factor = s.factor.ok_or("rope_scaling needs `factor`")?;
        let inv_freq = match s.rope_type.as_str() {
            "default" => base,
            "linear" => base.iter().map(|f| f / factor).collect(),
            "llama3" => {
                let low = s
                    .low_freq_factor
                    .ok_or("llama3 rope_scaling needs `low_freq_factor`")?;
                let high = s
                    .high_freq_factor
                    .ok_or("llama3 rope_scaling needs `high_freq_factor`")?;
                let old_ctx = s
                    .original_max_position_embeddings
                    .ok_or("llama3 rope_scaling needs `original_max_position_embeddings`")?
                    as f64;
                let (low_wavelen, high_wavelen) = (old_ctx / low, old_ctx / high);
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old_ctx / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
            other => {
                return Err(format!(
                    "rope_scaling type `{other}` is not supported (default, linear, llama3)"
                ))
            }
        };
        Ok(Self { inv_freq })
    }
}

/// Attention settings that may differ per layer (local/global patterns).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    /// Each query sees at most this many keys, itself included.
    pub sliding_window: Option<usize>,
    pub rope: Rope,
}

/// Everything `decoder.rs` needs, whatever the family.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub block: BlockKind,
    pub norm: NormKind,
    pub qk_norm: QkNorm,
    pub act: Activation,
    /// Embeddings are multiplied by this (Gemma: `sqrt(hidden_size)`, rounded to the compute dtype).
    pub embed_scale: Option<f64>,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Multiplies `q·k` (usually `head_dim^-0.5`; Gemma 2/3: `query_pre_attn_scalar^-0.5`).
    pub attn_scale: f64,
    pub attn_softcap: Option<f64>,
    pub final_softcap: Option<f64>,
    pub tie_word_embeddings: bool,
    pub attention_dropout: f64,
    pub layers: Vec<LayerSpec>,
}

impl DecoderConfig {
    pub fn num_hidden_layers(&self) -> usize {
        self.layers.len()
    }
}

/// Parses a family's serde mirror out of `config.json`, naming the file on error.
pub fn parse_family<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    json: &serde_json::Value,
) -> crate::Result<T> {
    serde_json::from_value(json.clone())
        .map_err(|e| crate::ModelError::file(path, format!("invalid config: {e}")))
}

/// Fields every supported family shares, with their HF names and defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct CommonFields {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub attention_dropout: f64,
    /// Left optional: the default differs per family.
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// transformers ≥ 5 writes `rope_parameters` (a dict, or one dict per layer type) instead.
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
}

fn default_eps() -> f64 {
    1e-6
}

// Caps on sizes read from config.json, checked before anything is allocated: far above every
// released model (the largest vocabularies are ~262k, hidden sizes ~25k, depths ~128), far
// below what would make a tensor shape overflow or an allocation abort the process.
pub(crate) const MAX_LAYERS: usize = 1 << 12;
pub(crate) const MAX_HEADS: usize = 1 << 12;
pub(crate) const MAX_HEAD_DIM: usize = 1 << 13;
pub(crate) const MAX_HIDDEN: usize = 1 << 18;
pub(crate) const MAX_INTERMEDIATE: usize = 1 << 20;
pub(crate) const MAX_VOCAB: usize = 1 << 24;

/// Each `(field, value, limit)` must be in 1..=limit; the error names the field.
pub(crate) fn check_sizes(
    sizes: &[(&'static str, usize, usize)],
) -> Result<(), (&'static str, String)> {
    for &(field, n, max) in sizes {
        if n == 0 {
            return Err((field, "must be ≥ 1".into()));
        }
        if n > max {
            return Err((field, format!("{n} is past the limit {max}")));
        }
    }
    Ok(())
}

impl CommonFields {
    /// Sizes within their limits (before `num_hidden_layers` sizes anything).
    pub fn check_sizes(&self) -> Result<(), String> {
        let heads = self.num_attention_heads;
        check_sizes(&[
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("num_attention_heads", heads, MAX_HEADS),
            (
                "num_key_value_heads",
                self.num_key_value_heads.unwrap_or(heads),
                MAX_HEADS,
            ),
            ("hidden_size", self.hidden_size, MAX_HIDDEN),
            (
                "head_dim",
                self.head_dim
                    .unwrap_or(self.hidden_size / heads.max(1))
                    .max(1),
                MAX_HEAD_DIM,
            ),
            (
                "intermediate_size",
                self.intermediate_size,
                MAX_INTERMEDIATE,
            ),
            ("vocab_size", self.vocab_size, MAX_VOCAB),
        ])
        .map_err(|(field, msg)| format!("{field}: {msg}"))
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The rope of a layer of type `layer_type` (`full_attention` / `sliding_attention`), reading the
    /// transformers 4.x keys or the 5.x `rope_parameters`. `default_theta` is the family's default base.
    pub fn rope(&self, layer_type: Option<&str>, default_theta: f64) -> Result<Rope, String> {
        let mut theta = self.rope_theta.unwrap_or(default_theta);
        let mut scaling = self.rope_scaling.clone();
        if let Some(params) = &self.rope_parameters {
            // Per-layer-type dicts (Gemma 3) are keyed by layer type; global layers by default.
            let params = if params.get("full_attention").is_some()
                || params.get("sliding_attention").is_some()
            {
                let t = layer_type.unwrap_or("full_attention");
                params
                    .get(t)
                    .ok_or(format!("rope_parameters has no `{t}` entry"))?
            } else {
                params
            };
            let p: RopeScaling = serde_json::from_value(params.clone())
                .map_err(|e| format!("invalid rope_parameters: {e}"))?;
            theta = p.rope_theta.unwrap_or(theta);
            scaling = Some(p);
        }
        let scaling = scaling.filter(|s| s.rope_type != "default");
        Rope::new(theta, self.head_dim(), scaling.as_ref())
    }

    /// The Llama reading of these fields; family files change what differs.
    pub fn llama_like(&self, model_type: &str, act: &str) -> Result<DecoderConfig, String> {
        self.check_sizes()?;
        let act = Activation::from_hf(act).ok_or(format!("activation `{act}` is not supported"))?;
        let heads = self.num_attention_heads;
        let kv_heads = self.num_key_value_heads.unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(format!("num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})"));
        }
        let head_dim = self.head_dim();
        if !head_dim.is_multiple_of(2) {
            return Err(format!(
                "head_dim ({head_dim}) must be even for rotary embeddings"
            ));
        }
        let rope = self.rope(None, 10_000.0)?;
        Ok(DecoderConfig {
            model_type: model_type.to_string(),
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: self.rms_norm_eps,
            block: BlockKind::PreNorm,
            norm: NormKind::Plain,
            qk_norm: QkNorm::None,
            act,
            embed_scale: None,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            attn_scale: 1.0 / (head_dim as f64).sqrt(),
            attn_softcap: None,
            final_softcap: None,
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(false),
            attention_dropout: self.attention_dropout,
            layers: vec![
                LayerSpec {
                    sliding_window: None,
                    rope
                };
                self.num_hidden_layers
            ],
        })
    }

    /// Layer types from `layer_types`, else from `is_sliding(layer_index)`.
    pub fn layer_types(&self, is_sliding: impl Fn(usize) -> bool) -> Result<Vec<bool>, String> {
        self.check_sizes()?;
        match &self.layer_types {
            Some(types) => {
                if types.len() != self.num_hidden_layers {
                    return Err(format!(
                        "layer_types has {} entries for {} layers",
                        types.len(),
                        self.num_hidden_layers
                    ));
                }
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        "sliding_attention" => Ok(true),
                        "full_attention" => Ok(false),
                        other => Err(format!("layer type `{other}` is not supported")),
                    })
                    .collect()
            }
            None => Ok((0..self.num_hidden_layers).map(is_sliding).collect()),
        }
    }
}
