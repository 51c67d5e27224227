//! The frozen reference of preference objectives: the starting model (default), another model
//! (`[reference] path`), or SALSA's reference — the weight-space average ("soup") of several
//! fine-tuned checkpoints of one base (`[reference] soup`, optional `weights`; Chegini et al.
//! 2024, "SALSA: Soup-based Alignment Learning for Stronger Adaptation in RLHF"): the reference
//! θ_ref = Σᵢ wᵢ θᵢ with Σ wᵢ = 1 (uniform unless `weights` are given).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use graft_models::load::Weights;
use graft_models::{Model, ModelSource};
use serde::{Deserialize, Serialize};

use crate::mixture::TaskSection;
use crate::{Recipe, TrainError};
use graft_data::rows::TrainRow;

/// `[reference]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceSection {
    /// A model (HF directory or .gguf) to use as the reference instead of the starting model.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// SALSA: average these checkpoints' weights (same architecture and shapes).
    #[serde(default)]
    pub soup: Vec<PathBuf>,
    /// Soup weights (normalised to sum 1); default uniform.
    #[serde(default)]
    pub weights: Vec<f64>,
}

fn build(source: &ModelSource, dtype: DType) -> Result<Model, TrainError> {
    Ok(source.build_model(dtype, &Device::Cpu)?)
}

/// The weight average of `paths` as one model source (the first one's config and tokenizer).
pub fn soup(paths: &[PathBuf], weights: &[f64]) -> Result<ModelSource, TrainError> {
    if paths.len() < 2 {
        return Err(TrainError::Recipe(
            "reference.soup: give two or more checkpoints".into(),
        ));
    }
    let w: Vec<f64> = if weights.is_empty() {
        vec![1.0 / paths.len() as f64; paths.len()]
    } else if weights.len() != paths.len() || weights.iter().any(|x| !x.is_finite() || *x < 0.0) {
        return Err(TrainError::Recipe(format!(
            "reference.weights: {} non-negative weights for {} checkpoints",
            weights.len(),
            paths.len()
        )));
    } else {
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            return Err(TrainError::Recipe("reference.weights: all zero".into()));
        }
        weights.iter().map(|x| x / total).collect()
    };
    let mut first = ModelSource::open(&paths[0], DType::F32, &Device::Cpu)?;
    let mut sum: HashMap<String, Tensor> = first
        .tensors(DType::F32)?
        .into_iter()
        .map(|(k, t)| Ok((k, (t * w[0])?)))
        .collect::<Result<_, candle_core::Error>>()?;
    for (path, &wi) in paths.iter().zip(&w).skip(1) {
        let other = ModelSource::open(path, DType::F32, &Device::Cpu)?.tensors(DType::F32)?;
        if other.len() != sum.len() {
            return Err(TrainError::Recipe(format!(
                "reference.soup: {} has {} tensors, {} has {}",
                path.display(),
                other.len(),
                paths[0].display(),
                sum.len()
            )));
        }
        for (name, t) in other {
            let acc = sum.get_mut(&name).ok_or_else(|| {
                TrainError::Recipe(format!(
                    "reference.soup: {}: tensor `{name}` is not in {}",
                    path.display(),
                    paths[0].display()
                ))
            })?;
            if acc.dims() != t.dims() {
                return Err(TrainError::Recipe(format!(
                    "reference.soup: {}: tensor `{name}` has shape {:?}, {} has {:?}",
                    path.display(),
                    t.dims(),
                    paths[0].display(),
                    acc.dims()
                )));
            }
            *acc = (&*acc + (t * wi)?)?;
        }
    }
    first.weights = Weights::Tensors(sum);
    first.quantized.clear();
    Ok(first)
}

/// The reference model the recipe asks for (`start` = the starting model's source).
pub fn reference_model(
    cfg: Option<&ReferenceSection>,
    start: &ModelSource,
    dtype: DType,
) -> Result<Model, TrainError> {
    match cfg {
        None => build(start, dtype),
        Some(c) => match (&c.path, c.soup.is_empty()) {
            (Some(_), false) => Err(TrainError::Recipe(
                "reference: give `path` or `soup`, not both".into(),
            )),
            (Some(p), true) => build(&ModelSource::open(p, DType::F32, &Device::Cpu)?, dtype),
            (None, false) => build(&soup(&c.soup, &c.weights)?, dtype),
            (None, true) => build(start, dtype),
        },
    }
}

/// A fingerprint of the rows' token streams and the reference's description: a disk cache of
/// reference log-probs is reused only for the same rows and the same reference.
pub fn fingerprint(rows: &[&TrainRow], reference: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(reference.as_bytes());
    for r in rows {
        for part in r.parts() {
            h.update((part.input_ids.len() as u64).to_le_bytes());
            for id in &part.input_ids {
                h.update(id.to_le_bytes());
            }
            if let Some(e) = &part.encoder_ids {
                h.update(b"enc");
                for id in e {
                    h.update(id.to_le_bytes());
                }
            }
        }
    }
    format!("{:x}", h.finalize())
}

/// Writes every row's (and its other responses') cached reference log-probs to `path`
/// (safetensors: `logps` flat f32, `offsets` i64; metadata `fingerprint`), atomically.
pub fn save_cache(
    path: &std::path::Path,
    rows: &[&TrainRow],
    fingerprint: &str,
) -> Result<(), TrainError> {
    let (mut flat, mut offsets) = (Vec::new(), vec![0i64]);
    for r in rows {
        for part in r.parts() {
            flat.extend_from_slice(part.ref_logps.as_deref().unwrap_or(&[]));
            offsets.push(flat.len() as i64);
        }
    }
    let n = offsets.len();
    let tensors = [
        (
            "logps".to_string(),
            Tensor::from_vec(flat.clone(), flat.len(), &Device::Cpu)?,
        ),
        (
            "offsets".to_string(),
            Tensor::from_vec(offsets, n, &Device::Cpu)?,
        ),
    ];
    let meta: HashMap<String, String> =
        [("fingerprint".to_string(), fingerprint.to_string())].into();
    let tmp = graft_models::fsio::temp_sibling(path);
    let io = |e: &dyn std::fmt::Display| TrainError::Io(format!("{}: {e}", path.display()));
    safetensors::serialize_to_file(
        tensors.iter().map(|(k, t)| (k.as_str(), t)),
        Some(meta),
        &tmp,
    )
    .map_err(|e| io(&e))?;
    graft_models::fsio::commit_file(&tmp, path).map_err(|e| io(&e))
}

/// Fills the rows' reference log-probs from `path` when it exists and matches `fingerprint`;
/// returns whether it did.
pub fn load_cache(
    path: &std::path::Path,
    rows: Vec<&mut TrainRow>,
    fingerprint: &str,
) -> Result<bool, TrainError> {
    if !path.exists() {
        return Ok(false);
    }
    let io = |e: &dyn std::fmt::Display| TrainError::Io(format!("{}: {e}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| io(&e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| io(&e))?;
    let same = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("fingerprint"))
        .is_some_and(|f| f == fingerprint);
    if !same {
        return Ok(false);
    }
    let t = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
    let flat: Vec<f32> = t.get("logps").ok_or_else(|| io(&"no `logps`"))?.to_vec1()?;
    let offsets: Vec<i64> = t
        .get("offsets")
        .ok_or_else(|| io(&"no `offsets`"))?
        .to_vec1()?;
    let parts: usize = rows.iter().map(|r| 1 + r.others.len()).sum();
    if parts + 1 != offsets.len() || offsets.last().is_some_and(|&o| o as usize != flat.len()) {
        return Err(io(&"the cache does not fit the rows"));
    }
    let mut k = 0;
    for r in rows {
        r.for_each_part_mut(|part| {
            let (a, b) = (offsets[k] as usize, offsets[k + 1] as usize);
            part.ref_logps = Some(flat[a..b].to_vec());
            k += 1;
        });
    }
    Ok(true)
}

/// Fills every train and eval row's reference log-probs: from `out/reference_logps.safetensors`
/// when it holds these rows' log-probs under this reference, else by running the reference model
/// (built only then, dropped after) and writing that cache.
pub fn cache_log_probs(
    tasks: &mut [(TaskSection, Vec<TrainRow>)],
    eval: &mut [TrainRow],
    recipe: &Recipe,
    source: &ModelSource,
    dtype: DType,
    out: &std::path::Path,
    progress: bool,
) -> Result<(), TrainError> {
    let path = out.join("reference_logps.safetensors");
    let desc = reference_id(recipe, dtype)?;
    let fp = {
        let all: Vec<&TrainRow> = tasks
            .iter()
            .flat_map(|(_, r)| r.iter())
            .chain(eval.iter())
            .collect();
        fingerprint(&all, &desc)
    };
    let all: Vec<&mut TrainRow> = tasks
        .iter_mut()
        .flat_map(|(_, r)| r.iter_mut())
        .chain(eval.iter_mut())
        .collect();
    if load_cache(&path, all, &fp)? {
        return Ok(());
    }
    let model = reference_model(recipe.reference.as_ref(), source, dtype)?;
    let total: usize = tasks.iter().map(|(_, r)| r.len()).sum();
    let bar = if progress {
        indicatif::ProgressBar::new(total as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_message("caching reference log-probs");
    let batch = recipe.train.batch_size;
    let mut done = 0;
    for (_, rows) in tasks.iter_mut() {
        cache_reference(rows, &model, batch, &Device::Cpu, |n| {
            bar.set_position((done + n) as u64)
        })?;
        done += rows.len();
    }
    cache_reference(eval, &model, batch, &Device::Cpu, |_| ())?;
    bar.finish_and_clear();
    std::fs::create_dir_all(out).map_err(|e| TrainError::Io(format!("{}: {e}", out.display())))?;
    let all: Vec<&TrainRow> = tasks
        .iter()
        .flat_map(|(_, r)| r.iter())
        .chain(eval.iter())
        .collect();
    save_cache(&path, &all, &fp)
}

/// What the reference is, by content: the hashes of the files of every model it is built from
/// (a model copied, moved or renamed keeps its cache; one rewritten in place does not), the
/// soup weights, the dtype and the quantization.
fn reference_id(recipe: &Recipe, dtype: DType) -> Result<String, TrainError> {
    let r = recipe.reference.clone().unwrap_or_default();
    let paths: Vec<&std::path::Path> = match (&r.path, r.soup.is_empty()) {
        (Some(p), _) => vec![p],
        (None, false) => r.soup.iter().map(PathBuf::as_path).collect(),
        (None, true) => vec![&recipe.model.path],
    };
    let mut id = format!("{:?}|{dtype:?}|{:?}", r.weights, recipe.model.quantized);
    for p in paths {
        id.push('|');
        id.push_str(&content_id(p)?);
    }
    Ok(id)
}

/// The sha256 of a model file, or of a folder's files (name and hash, in name order).
fn content_id(path: &std::path::Path) -> Result<String, TrainError> {
    if !path.is_dir() {
        return crate::manifest::sha256(path);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| TrainError::Io(format!("{}: {e}", path.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut id = String::new();
    for f in files {
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        id.push_str(&format!("{name}:{};", crate::manifest::sha256(&f)?));
    }
    Ok(id)
}

/// Caches the reference model's next-token log-probs in every row (and its other responses), batch by
/// batch, calling `progress` with the rows done.
pub fn cache_reference(
    rows: &mut [TrainRow],
    reference: &graft_models::Model,
    batch_size: usize,
    device: &Device,
    mut progress: impl FnMut(usize),
) -> candle_core::Result<()> {
    let mut done = 0;
    for chunk in rows.chunks_mut(batch_size.max(1)) {
        let slots = chunk.iter().map(|r| 1 + r.others.len()).max().unwrap_or(1);
        for slot in 0..slots {
            let group: Vec<TrainRow> = chunk
                .iter()
                .filter_map(|r| r.parts().nth(slot))
                .map(|r| TrainRow {
                    others: Vec::new(),
                    ref_logps: None,
                    ..r.clone()
                })
                .collect();
            let batch = crate::batch::collate_rows(&group.iter().collect::<Vec<_>>(), device)?;
            let values: Vec<Vec<f32>> = crate::net::batch_logps(reference, &batch, false, false)?
                .0
                .to_vec2()?;
            let targets = chunk.iter_mut().filter_map(|r| match slot {
                0 => Some(r),
                s => r.others.get_mut(s - 1),
            });
            for (row, v) in targets.zip(values) {
                let n = row.input_ids.len().saturating_sub(1);
                row.ref_logps = Some(v[..n].to_vec());
            }
        }
        done += chunk.len();
        progress(done);
    }
    Ok(())
}
