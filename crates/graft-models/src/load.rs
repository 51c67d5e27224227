//! Opening a model path: an HF directory (`config.json`, `model.safetensors` or a sharded index,
//! memory-mapped; tokenizer files; `generation_config.json`) or a `.gguf` file. Every failure names
//! the file and what is wrong with it.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::layers::quant::QuantWeight;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::Value;

use crate::config::DecoderConfig;
use crate::decoder::Decoder;
use crate::registry::Arch;
use crate::t5::T5;
use crate::tokenizer::Tokenizer;
use crate::{gguf, gguf_tokenizer, registry, ModelError, Result};

/// What decoding needs from `generation_config.json` (or, failing that, `config.json`).
#[derive(Debug, Clone, Default)]
pub struct GenerationConfig {
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

fn ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

pub enum Weights {
    /// Safetensors files, memory-mapped when the model is built.
    Safetensors(Vec<PathBuf>),
    /// Already materialised tensors under HF keys (dequantized GGUF).
    Tensors(HashMap<String, Tensor>),
}

/// A model path opened and validated, weights not yet built into a model.
pub struct ModelSource {
    pub path: PathBuf,
    /// HF `config.json` (synthesised from metadata for GGUF files).
    pub config_json: Value,
    pub(crate) arch: Arch,
    pub weights: Weights,
    pub tokenizer: Option<Tokenizer>,
    /// Why the tokenizer could not be loaded, when it could not.
    pub tokenizer_error: Option<String>,
    pub generation: GenerationConfig,
    /// Approximations the loader had to make, for the CLI to show.
    pub warnings: Vec<String>,
    /// Linear weights held quantized (see [`Quantization`]), by HF weight key.
    pub quantized: HashMap<String, Arc<QuantWeight>>,
}

/// How a model's frozen linear weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quantization {
    /// Dense, in the requested dtype.
    #[default]
    None,
    /// A GGUF file's quantized weights as stored.
    Stored,
    /// An HF model's decoder-layer linear weights quantized to NF4 at load time, as
    /// bitsandbytes' `BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")` does
    /// (the embeddings and the LM head stay dense); `double_quant` as `bnb_4bit_use_double_quant`.
    Nf4 { double_quant: bool },
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::file(path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::file(path, format!("invalid JSON: {e}")))
}

impl ModelSource {
    /// Opens an HF directory or a `.gguf` file. GGUF tensors are dequantized to `dtype` here.
    pub fn open(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        Self::open_with(path, dtype, device, Quantization::None)
    }

    /// As [`Self::open`], holding the linear weights as `quantization` says (frozen bases for
    /// QLoRA-style adapter training and for inference).
    pub fn open_with(
        path: &Path,
        dtype: DType,
        device: &Device,
        quantization: Quantization,
    ) -> Result<Self> {
        if !path.exists() {
            return Err(ModelError::file(path, "no such file or directory"));
        }
        let source = match (path.is_dir(), quantization) {
            (true, Quantization::Stored) => {
                return Err(ModelError::file(
                    path,
                    "keeping weights quantized as stored needs a .gguf file (an HF model can be quantized to NF4)",
                ))
            }
            (true, _) => Self::open_hf_dir(path)?,
            (false, Quantization::Nf4 { .. }) => {
                return Err(ModelError::file(
                    path,
                    "NF4 quantizes an HF model directory; a .gguf is kept quantized as stored",
                ))
            }
            (false, q) => Self::open_gguf(path, dtype, device, q == Quantization::Stored)?,
        };
        match quantization {
            Quantization::Nf4 { double_quant } => source.into_nf4(dtype, device, double_quant),
            _ => Ok(source),
        }
    }

    /// Reads the weights tensor by tensor, quantizing the decoder layers' 2-D `.weight`s to NF4
    /// (a zero-stride placeholder stands in for each in the dense map), so no more than one dense
    /// linear weight is held at a time.
    fn into_nf4(mut self, dtype: DType, device: &Device, double_quant: bool) -> Result<Self> {
        if matches!(self.arch, Arch::T5(_)) {
            return Err(ModelError::file(
                &self.path,
                "NF4 bases are supported for decoder-only models",
            ));
        }
        let Weights::Safetensors(files) = &self.weights else {
            return Ok(self);
        };
        // SAFETY: read-only memory maps of files graft does not write.
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(files) }
            .map_err(|e| ModelError::file(&files[0], format!("corrupt safetensors: {e}")))?;
        let (mut dense, mut quantized) = (HashMap::new(), HashMap::new());
        for (name, view) in st.tensors() {
            let wrap = |e: candle_core::Error| ModelError::tensor(&self.path, &name, e);
            let t = st.load(&name, device).map_err(wrap)?;
            let linear =
                view.shape().len() == 2 && name.contains(".layers.") && name.ends_with(".weight");
            if !linear {
                dense.insert(name.clone(), t.to_dtype(dtype).map_err(wrap)?);
                continue;
            }
            let (rows, cols) = t.dims2().map_err(wrap)?;
            let values: Vec<f32> = t
                .to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .map_err(wrap)?;
            let q = crate::layers::nf4::Nf4Tensor::quantize(&values, (rows, cols), double_quant);
            let placeholder = Tensor::zeros((), dtype, device)
                .and_then(|z| z.broadcast_as((rows, cols)))
                .map_err(wrap)?;
            dense.insert(name.clone(), placeholder);
            quantized.insert(name, Arc::new(QuantWeight::Nf4(q)));
        }
        self.weights = Weights::Tensors(dense);
        self.quantized = quantized;
        Ok(self)
    }

    fn open_hf_dir(dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        if !config_path.exists() {
            return Err(ModelError::file(
                &config_path,
                "missing: not an HF model directory",
            ));
        }
        let config_json = read_json(&config_path)?;
        let arch = registry::arch_config(&config_path, &config_json)?;
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files = if single.exists() {
            vec![single]
        } else if index.exists() {
            let files = shard_files(dir, &index, &read_json(&index)?)?;
            if let Some(missing) = files.iter().find(|f| !f.exists()) {
                return Err(ModelError::file(
                    missing,
                    format!("missing: listed in {}", index.display()),
                ));
            }
            files
        } else {
            return Err(ModelError::file(
                dir,
                "no model.safetensors or model.safetensors.index.json",
            ));
        };
        let (tokenizer, tokenizer_error) = match Tokenizer::from_hf_dir(dir) {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let gen_path = dir.join("generation_config.json");
        let gen_json = if gen_path.exists() {
            read_json(&gen_path)?
        } else {
            Value::Null
        };
        let generation = generation_config(&gen_json, &config_json, tokenizer.as_ref());
        Ok(Self {
            path: dir.to_path_buf(),
            config_json,
            arch,
            weights: Weights::Safetensors(files),
            tokenizer,
            tokenizer_error,
            generation,
            warnings: Vec::new(),
            quantized: HashMap::new(),
        })
    }

    fn open_gguf(path: &Path, dtype: DType, device: &Device, keep_quantized: bool) -> Result<Self> {
        let content = gguf::read_content(path)?;
        let config_json = gguf::config_json(path, &content)?;
        let arch = registry::decoder_config(path, &config_json).map(Arch::Decoder)?;
        // The tokenizer (for a 262k SentencePiece vocabulary, half a million merges derived from
        // the scores) is built on its own thread while the tensors are read.
        let (loaded, built) = std::thread::scope(|s| {
            let tokenizer = s.spawn(|| gguf_tokenizer::tokenizer_from_gguf(path, &content));
            let loaded =
                gguf::load_tensors(path, &content, &config_json, dtype, device, keep_quantized);
            (loaded, tokenizer.join())
        });
        let (tensors, quantized) = loaded?;
        let (tokenizer, tokenizer_error, warnings) = match built {
            Ok(Ok((t, w))) => (Some(t), None, w),
            Ok(Err(e)) => (None, Some(e.to_string()), Vec::new()),
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let generation = generation_config(&Value::Null, &config_json, tokenizer.as_ref());
        Ok(Self {
            path: path.to_path_buf(),
            config_json,
            arch,
            weights: Weights::Tensors(tensors),
            tokenizer,
            tokenizer_error,
            generation,
            warnings,
            quantized,
        })
    }

    /// A VarBuilder over the weights whose keys are the HF checkpoint keys.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
        match &self.weights {
            // SAFETY: the files are memory-mapped read-only; graft never writes to a model it reads.
            Weights::Safetensors(files) => {
                unsafe { VarBuilder::from_mmaped_safetensors(files, dtype, device) }
                    .map_err(|e| ModelError::file(&files[0], format!("corrupt safetensors: {e}")))
            }
            Weights::Tensors(t) => Ok(VarBuilder::from_tensors(t.clone(), dtype, device)),
        }
    }

    /// The decoder-only model's config; an encoder-decoder model is an error that says so.
    pub fn decoder_config(&self) -> Result<&DecoderConfig> {
        match &self.arch {
            Arch::Decoder(c) => Ok(c),
            Arch::T5(c) => Err(ModelError::file(
                &self.path,
                format!(
                    "is an encoder-decoder model ({}); this needs a decoder-only model",
                    c.model_type
                ),
            )),
        }
    }

    /// Builds the model, whatever its architecture, in `dtype` on `device`.
    pub fn build_model(&self, dtype: DType, device: &Device) -> Result<crate::Model> {
        Ok(match &self.arch {
            Arch::Decoder(_) => self.build(dtype, device)?.into(),
            Arch::T5(_) => self.build_t5(dtype, device)?.into(),
        })
    }

    /// The model to train, with `dropout` (when given) as its dropout rate. With `vars` (a
    /// VarBuilder over the trainer's variables) every weight is a fresh variable for the caller to
    /// fill — full fine-tuning; without, the source's weights are used as they are (frozen, kept
    /// quantized where they are), for an adapter on top.
    pub fn build_for_training(
        &self,
        dropout: Option<f64>,
        dtype: DType,
        device: &Device,
        vars: Option<VarBuilder>,
    ) -> Result<crate::Model> {
        let fit = |e| ModelError::file(&self.path, format!("weights do not fit config: {e}"));
        Ok(match &self.arch {
            Arch::Decoder(c) => {
                let mut config = c.clone();
                config.attention_dropout = dropout.unwrap_or(config.attention_dropout);
                match vars {
                    Some(vb) => Decoder::new(&config, vb).map_err(fit)?.into(),
                    None => self.build_with(&config, dtype, device)?.into(),
                }
            }
            Arch::T5(c) => {
                // T5 has one dropout rate (embeddings, residuals, attention, FFN).
                let mut config = c.clone();
                config.dropout_rate = dropout.unwrap_or(config.dropout_rate);
                match vars {
                    Some(vb) => {
                        let untied = self.tensors(DType::F32)?.contains_key("lm_head.weight");
                        T5::new_with_head(&config, vb, untied).map_err(fit)?.into()
                    }
                    None => T5::new(&config, self.var_builder(dtype, device)?)
                        .map_err(fit)?
                        .into(),
                }
            }
        })
    }

    /// The encoder-decoder model's config (`None` for decoder-only models).
    pub fn t5_config(&self) -> Option<&crate::T5Config> {
        match &self.arch {
            Arch::T5(c) => Some(c),
            Arch::Decoder(_) => None,
        }
    }

    /// Whether the model is an encoder-decoder (seq2seq) model.
    pub fn is_seq2seq(&self) -> bool {
        matches!(self.arch, Arch::T5(_))
    }

    /// Builds the decoder-only model in `dtype` on `device`.
    pub fn build(&self, dtype: DType, device: &Device) -> Result<Decoder> {
        self.build_with(self.decoder_config()?, dtype, device)
    }

    /// Builds the encoder-decoder model in `dtype` on `device`.
    pub fn build_t5(&self, dtype: DType, device: &Device) -> Result<T5> {
        let Arch::T5(cfg) = &self.arch else {
            return Err(ModelError::file(
                &self.path,
                "is a decoder-only model, not T5",
            ));
        };
        let vb = self.var_builder(dtype, device)?;
        T5::new(cfg, vb)
            .map_err(|e| ModelError::file(&self.path, format!("weights do not fit config: {e}")))
    }

    /// Builds the model with a (possibly adjusted) config; quantized weights are attached as such.
    pub fn build_with(
        &self,
        config: &DecoderConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Decoder> {
        let vb = self.var_builder(dtype, device)?;
        let mut model = Decoder::new(config, vb)
            .map_err(|e| ModelError::file(&self.path, format!("weights do not fit config: {e}")))?;
        for (name, linear) in model.linears_mut() {
            if let Some(q) = self.quantized.get(&format!("{name}.weight")) {
                linear.quantized = Some(q.clone());
            }
        }
        model.quantized_embed = self.quantized.get("model.embed_tokens.weight").cloned();
        model.quantized_head = self.quantized.get("lm_head.weight").cloned();
        Ok(model)
    }

    /// The tokenizer, or an error that says why there is none.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| {
            ModelError::file(
                &self.path,
                self.tokenizer_error
                    .clone()
                    .unwrap_or_else(|| "no tokenizer".into()),
            )
        })
    }
}

/// The tokenizer alone, for commands that need nothing else: an HF folder's `tokenizer.json`
/// (no weights needed) or a GGUF file's `tokenizer.ggml.*` metadata (a vocabulary-only GGUF
/// works), with warnings about approximations made in rebuilding it.
pub fn open_tokenizer(path: &Path) -> Result<(Tokenizer, Vec<String>)> {
    if path.is_dir() {
        return Ok((Tokenizer::from_hf_dir(path)?, Vec::new()));
    }
    let content = gguf::read_content(path)?;
    gguf_tokenizer::tokenizer_from_gguf(path, &content)
}

/// The shard files a `*.safetensors.index.json` lists (each once), which must be plain file names
/// in the model folder: `../x` or an absolute path would read outside it.
pub fn shard_files(dir: &Path, index: &Path, json: &Value) -> Result<Vec<PathBuf>> {
    let weight_map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| ModelError::config(index, "weight_map", "missing or not an object"))?;
    let names: BTreeSet<&str> = weight_map.values().filter_map(Value::as_str).collect();
    names
        .into_iter()
        .map(|n| {
            let mut parts = Path::new(n).components();
            match (parts.next(), parts.next()) {
                (Some(std::path::Component::Normal(_)), None) => Ok(dir.join(n)),
                _ => Err(ModelError::config(
                    index,
                    "weight_map",
                    format!("shard `{n}` is not a file name in the model folder"),
                )),
            }
        })
        .collect()
}

fn generation_config(
    gen: &Value,
    config: &Value,
    tokenizer: Option<&Tokenizer>,
) -> GenerationConfig {
    let mut eos = ids(gen.get("eos_token_id"));
    if eos.is_empty() {
        eos = ids(config.get("eos_token_id"));
    }
    if eos.is_empty() {
        eos.extend(tokenizer.and_then(|t| t.eos_id));
    }
    let bos = ids(gen.get("bos_token_id"))
        .first()
        .copied()
        .or(ids(config.get("bos_token_id")).first().copied());
    GenerationConfig {
        bos_token_id: bos.or(tokenizer.and_then(|t| t.bos_id)),
        eos_token_ids: eos,
    }
}
