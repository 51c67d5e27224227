//! GGUF files as model paths: metadata → an HF-shaped `config.json` (then parsed by the family like
//! any other), tensors dequantized and renamed to HF checkpoint keys, with llama.cpp's conversions
//! undone — Llama's interleaved q/k rows and Gemma's `+1` on norm weights.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Map, Value as Json};

use crate::qkernels::QFormat;
use crate::registry::FAMILIES;
use crate::{ModelError, Result};

pub fn read_content(path: &Path) -> Result<Content> {
    let not_gguf = |e: &dyn std::fmt::Display| {
        ModelError::file(path, format!("not a readable GGUF file: {e}"))
    };
    // Lengths are checked against the file before candle allocates by them.
    crate::gguf_check::check_file(path).map_err(|e| not_gguf(&e))?;
    // Buffered: candle reads the metadata a field at a time (a system call per string of a
    // 262k-token vocabulary without a buffer).
    let file = File::open(path).map_err(|e| ModelError::file(path, e))?;
    let mut file = std::io::BufReader::with_capacity(1 << 20, file);
    crate::guard::catch("the GGUF header", || Content::read(&mut file))
        .map_err(|e| not_gguf(&e))?
        .map_err(|e| not_gguf(&e))
}

fn arch_of(path: &Path, content: &Content) -> Result<String> {
    content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| ModelError::config(path, "general.architecture", "missing"))
}

fn num(v: &Value) -> Option<f64> {
    v.to_f64()
        .ok()
        .or_else(|| v.to_f32().ok().map(f64::from))
        .or_else(|| v.to_u32().ok().map(f64::from))
        .or_else(|| v.to_i32().ok().map(f64::from))
        .or_else(|| v.to_u64().ok().map(|x| x as f64))
}

/// The HF `config.json` equivalent of the file's metadata.
pub fn config_json(path: &Path, content: &Content) -> Result<Json> {
    let arch = arch_of(path, content)?;
    let family = FAMILIES
        .iter()
        .find(|f| f.gguf_arch == arch)
        .ok_or_else(|| ModelError::UnknownArchitecture {
            path: path.to_path_buf(),
            name: arch.clone(),
            supported: FAMILIES
                .iter()
                .map(|f| f.gguf_arch)
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let get = |key: &str| content.metadata.get(&format!("{arch}.{key}")).and_then(num);
    let need = |key: &str| {
        get(key).ok_or_else(|| ModelError::config(path, &format!("{arch}.{key}"), "missing"))
    };
    let has_tensor = |name: &str| content.tensor_infos.contains_key(name);
    let embd = content
        .tensor_infos
        .get("token_embd.weight")
        .ok_or_else(|| ModelError::tensor(path, "token_embd.weight", "missing"))?;
    let heads = need("attention.head_count")? as usize;
    if heads == 0 {
        return Err(ModelError::config(
            path,
            &format!("{arch}.attention.head_count"),
            "must be ≥ 1",
        ));
    }
    let hidden = need("embedding_length")? as usize;
    let mut c = Map::new();
    c.insert("model_type".into(), json!(family.model_type));
    c.insert("architectures".into(), json!([family.architecture]));
    let vocab = match embd.shape.dims() {
        [v, h] if *v > 0 && *h > 0 => *v,
        d => {
            return Err(ModelError::tensor(
                path,
                "token_embd.weight",
                format!("shape {d:?}: expected (vocab, hidden), both ≥ 1"),
            ))
        }
    };
    c.insert("vocab_size".into(), json!(vocab));
    c.insert("hidden_size".into(), json!(hidden));
    c.insert(
        "intermediate_size".into(),
        json!(need("feed_forward_length")? as usize),
    );
    c.insert(
        "num_hidden_layers".into(),
        json!(need("block_count")? as usize),
    );
    c.insert("num_attention_heads".into(), json!(heads));
    c.insert(
        "num_key_value_heads".into(),
        json!(get("attention.head_count_kv").map_or(heads, |v| v as usize)),
    );
    let head_dim = get("attention.key_length").map_or(hidden / heads, |v| v as usize);
    c.insert("head_dim".into(), json!(head_dim));
    c.insert(
        "rms_norm_eps".into(),
        json!(need("attention.layer_norm_rms_epsilon")?),
    );
    c.insert(
        "max_position_embeddings".into(),
        json!(get("context_length").unwrap_or(4096.0) as usize),
    );
    c.insert(
        "rope_theta".into(),
        json!(get("rope.freq_base").unwrap_or(10_000.0)),
    );
    if let (Some(Value::String(kind)), Some(factor)) = (
        content.metadata.get(&format!("{arch}.rope.scaling.type")),
        get("rope.scaling.factor"),
    ) {
        if kind != "none" {
            c.insert(
                "rope_scaling".into(),
                json!({"rope_type": kind, "factor": factor}),
            );
        }
    }
    if has_tensor("rope_freqs.weight") {
        let theta = c["rope_theta"].as_f64().unwrap_or(10_000.0);
        c.insert(
            "rope_scaling".into(),
            llama3_scaling(path, content, theta, head_dim)?,
        );
    }
    c.insert(
        "tie_word_embeddings".into(),
        json!(!has_tensor("output.weight")),
    );
    c.insert(
        "attention_bias".into(),
        json!(has_tensor("blk.0.attn_q.bias")),
    );
    if let Some(w) = get("attention.sliding_window") {
        c.insert("sliding_window".into(), json!(w as usize));
    }
    for (gguf_key, hf_key) in [
        ("attn_logit_softcapping", "attn_logit_softcapping"),
        ("final_logit_softcapping", "final_logit_softcapping"),
    ] {
        c.insert(
            hf_key.into(),
            get(gguf_key).map_or(Json::Null, |v| json!(v)),
        );
    }
    if arch.starts_with("gemma") {
        // llama.cpp scales queries by 1/sqrt(head_dim) for these files.
        c.insert("query_pre_attn_scalar".into(), json!(head_dim));
        c.insert("hidden_activation".into(), json!("gelu_pytorch_tanh"));
    }
    if arch == "gemma3" {
        c.insert(
            "rope_local_base_freq".into(),
            json!(get("rope.freq_base_swa").unwrap_or(10_000.0)),
        );
        c.insert("sliding_window_pattern".into(), json!(6));
    }
    let tok = |key: &str| content.metadata.get(key).and_then(num).map(|v| v as u32);
    if let Some(id) = tok("tokenizer.ggml.bos_token_id") {
        c.insert("bos_token_id".into(), json!(id));
    }
    if let Some(id) = tok("tokenizer.ggml.eos_token_id") {
        c.insert("eos_token_id".into(), json!(id));
    }
    Ok(Json::Object(c))
}

/// llama.cpp stores Llama 3.x rope scaling as `rope_freqs.weight`, one divisor per frequency pair,
/// not as parameters. Recover HF's `rope_scaling` by finding the llama3 parameters that reproduce the
/// divisors (Llama 3.1/3.2 use low 1, high 4, original context 8192; others are searched), so the model
/// and any HF directory written from it carry the exact scaling.
fn llama3_scaling(path: &Path, content: &Content, theta: f64, head_dim: usize) -> Result<Json> {
    let name = "rope_freqs.weight";
    let mut file = File::open(path).map_err(|e| ModelError::file(path, e))?;
    let divisors: Vec<f32> = content
        .tensor(&mut file, name, &Device::Cpu)
        .and_then(|q| q.dequantize(&Device::Cpu))
        .and_then(|t| t.flatten_all()?.to_vec1())
        .map_err(|e| ModelError::tensor(path, name, e))?;
    let factor = divisors.iter().copied().fold(1.0f32, f32::max) as f64;
    let base = crate::config::Rope::new(theta, head_dim, None)
        .map_err(|e| ModelError::tensor(path, name, e))?;
    for (low, high) in [(1.0, 4.0), (1.0, 2.0), (2.0, 4.0)] {
        for ctx in (4..=20).map(|p| 1usize << p) {
            let scaling = crate::config::RopeScaling {
                rope_type: "llama3".into(),
                factor: Some(factor),
                low_freq_factor: Some(low),
                high_freq_factor: Some(high),
                original_max_position_embeddings: Some(ctx),
                rope_theta: None,
            };
            let Ok(scaled) = crate::config::Rope::new(theta, head_dim, Some(&scaling)) else {
                continue;
            };
            let fits = divisors.len() == base.inv_freq.len()
                && base
                    .inv_freq
                    .iter()
                    .zip(&scaled.inv_freq)
                    .zip(&divisors)
                    .all(|((b, s), &d)| ((b / s) as f32 - d).abs() <= 1e-4 * d);
            if fits {
                return Ok(
                    json!({"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                    "high_freq_factor": high, "original_max_position_embeddings": ctx}),
                );
            }
        }
    }
    Err(ModelError::tensor(
        path,
        name,
        "these rope frequency divisors match no llama3 rope_scaling; graft cannot represent them",
    ))
}

/// HF key of a GGUF tensor name, for a family whose blocks are `PreNorm` (`ffn_norm` is the pre-MLP
/// norm, HF's `post_attention_layernorm`) or sandwich (`ffn_norm` is `pre_feedforward_layernorm`).
fn hf_name(name: &str, sandwich: bool) -> Option<String> {
    let fixed = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, suffix) = rest.rsplit_once('.')?;
    let hf = match module {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "attn_norm" => "input_layernorm",
        "ffn_norm" if sandwich => "pre_feedforward_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "post_attention_norm" => "post_attention_layernorm",
        "post_ffw_norm" => "post_feedforward_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// The row count of a q/k projection, which must split into whole (head, D/2, 2) groups.
fn permuted_rows(dims: &[usize], heads: usize) -> candle_core::Result<usize> {
    match dims.first() {
        Some(&rows) if heads > 0 && rows > 0 && rows % (2 * heads) == 0 => Ok(rows),
        _ => candle_core::bail!(
            "shape {dims:?}: q/k rows must be a positive multiple of 2 × {heads} heads"
        ),
    }
}

/// Undo llama.cpp's q/k row interleaving: GGUF rows are (head, D/2, 2), HF rows (head, 2, D/2).
fn unpermute(t: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = permuted_rows(&dims, heads)?;
    let rest: Vec<usize> = dims[1..].to_vec();
    let mut shape = vec![heads, rows / heads / 2, 2];
    shape.extend(&rest);
    t.reshape(shape)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)
}

/// All tensors of the file, dequantized to `dtype`, under HF checkpoint keys.
/// Tensors of the file under HF keys. Quantized linear weights go to the second map, kept as stored
/// (`keep_quantized`), with a zero-stride placeholder of their shape in the first; everything else
/// is dequantized to `dtype`.
pub type Loaded = (
    HashMap<String, Tensor>,
    HashMap<String, Arc<crate::layers::quant::QuantWeight>>,
);

pub fn load_tensors(
    path: &Path,
    content: &Content,
    config: &Json,
    dtype: DType,
    device: &Device,
    keep_quantized: bool,
) -> Result<Loaded> {
    use crate::layers::quant::QuantWeight;
    let arch = arch_of(path, content)?;
    let sandwich = arch == "gemma2" || arch == "gemma3";
    let heads = config["num_attention_heads"].as_u64().unwrap_or(1) as usize;
    let kv_heads = config["num_key_value_heads"].as_u64().unwrap_or(1) as usize;
    let mut file = File::open(path).map_err(|e| ModelError::file(path, e))?;
    let mut map: Option<Arc<memmap2::Mmap>> = None;
    let (mut out, mut quantized) = (HashMap::new(), HashMap::new());
    for (name, info) in &content.tensor_infos {
        let Some(hf) = hf_name(name, sandwich) else {
            continue;
        };
        let wrap = |e: candle_core::Error| ModelError::tensor(path, name, e);
        let permuted_heads = match (
            arch.as_str(),
            name.contains(".attn_q."),
            name.contains(".attn_k."),
        ) {
            ("llama", true, _) => Some(heads),
            ("llama", _, true) => Some(kv_heads),
            _ => None,
        };
        let dt = info.ggml_dtype;
        let is_quant = !matches!(dt, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
        // Linear weights, the embeddings (read a row per token) and the head stay as stored.
        let matrix = (name.starts_with("blk.") && name.ends_with(".weight"))
            || name == "token_embd.weight"
            || name == "output.weight";
        let dims = info.shape.dims().to_vec();
        if keep_quantized && is_quant && matrix && dims.len() == 2 {
            let placeholder = Tensor::zeros((), dtype, device)
                .and_then(|z| z.broadcast_as(dims.clone()))
                .map_err(wrap)?;
            out.insert(hf.clone(), placeholder);
            let weight = match QFormat::of(dt) {
                // A format graft multiplies itself: the file's bytes, mapped (not copied).
                Some(format) => {
                    let map = match &map {
                        Some(m) => m.clone(),
                        None => map.insert(map_file(path, &file)?).clone(),
                    };
                    let at = (content.tensor_data_offset + info.offset) as usize;
                    let (rows, cols) = (dims[0], dims[1]);
                    QuantWeight::Gguf(mapped_matrix(
                        path,
                        name,
                        (map, at),
                        format,
                        (rows, cols),
                        permuted_heads,
                    )?)
                }
                None => {
                    let q = content.tensor(&mut file, name, device).map_err(wrap)?;
                    QuantWeight::Candle(match permuted_heads {
                        Some(h) => unpermute_quantized(&q, h, device).map_err(wrap)?,
                        None => q,
                    })
                }
            };
            quantized.insert(hf, Arc::new(weight));
            continue;
        }
        let q = content.tensor(&mut file, name, device).map_err(wrap)?;
        let mut t = q.dequantize(device).map_err(wrap)?;
        if let Some(h) = permuted_heads {
            t = unpermute(&t, h).map_err(wrap)?;
        }
        if arch.starts_with("gemma") && name.ends_with("norm.weight") {
            t = (t - 1.0).map_err(wrap)?;
        }
        out.insert(hf, t.to_dtype(dtype).map_err(wrap)?);
    }
    Ok((out, quantized))
}

/// The whole file mapped read-only.
fn map_file(path: &Path, file: &File) -> Result<Arc<memmap2::Mmap>> {
    // SAFETY: mapped read-only; graft never writes a model file it reads (as safetensors
    // weights are mapped).
    let m = unsafe { memmap2::Mmap::map(file) }.map_err(|e| ModelError::file(path, e))?;
    Ok(Arc::new(m))
}

/// Tensor `name`, (rows, cols) of `format` at byte `at` of the mapped file: its bytes borrowed
/// from the map, or reordered into an owned copy for Llama's q/k (`permuted_heads`).
fn mapped_matrix(
    path: &Path,
    name: &str,
    (map, at): (Arc<memmap2::Mmap>, usize),
    format: QFormat,
    (rows, cols): (usize, usize),
    permuted_heads: Option<usize>,
) -> Result<crate::layers::quant::GgufMatrix> {
    use crate::layers::quant::{GgufBytes, GgufMatrix};
    let len = rows * cols / format.block_len() * format.block_bytes();
    let range = at..at.saturating_add(len);
    if range.end > map.len() {
        return Err(ModelError::tensor(
            path,
            name,
            format!("needs bytes {range:?}, the file has {}", map.len()),
        ));
    }
    let bytes = match permuted_heads {
        Some(h) => GgufBytes::Owned(
            unpermute_rows(&map[range], rows, h).map_err(|e| ModelError::tensor(path, name, e))?,
        ),
        None => GgufBytes::Mapped(map, range),
    };
    GgufMatrix::new(format, (rows, cols), bytes).map_err(|e| ModelError::tensor(path, name, e))
}

/// [`unpermute`] on quantized rows (`rows` of them in `data`): quantization blocks run along a
/// row, so whole rows move as bytes.
fn unpermute_rows(data: &[u8], rows: usize, heads: usize) -> candle_core::Result<Vec<u8>> {
    let rows = permuted_rows(&[rows], heads)?;
    let row_bytes = data.len() / rows;
    let half = rows / heads / 2;
    let mut out = vec![0u8; data.len()];
    for h in 0..heads {
        for s in 0..2 {
            for j in 0..half {
                let hf_row = h * 2 * half + s * half + j;
                let gguf_row = h * 2 * half + j * 2 + s;
                out[hf_row * row_bytes..(hf_row + 1) * row_bytes]
                    .copy_from_slice(&data[gguf_row * row_bytes..(gguf_row + 1) * row_bytes]);
            }
        }
    }
    Ok(out)
}

/// [`unpermute_rows`] on a candle tensor (a quantized type graft does not multiply itself).
fn unpermute_quantized(q: &QTensor, heads: usize, device: &Device) -> candle_core::Result<QTensor> {
    let dims = q.shape().dims().to_vec();
    let out = unpermute_rows(&q.data()?, dims[0], heads)?;
    candle_core::quantized::ggml_file::qtensor_from_ggml(q.dtype(), &out, dims, device)
}
