//! A merge, start to end: plan, then tensor by tensor — read the group from the memory-mapped
//! inputs, merge, round to the output dtype, stream to the output shard — then config.json and
//! the tokenizer files; everything in a temporary folder renamed into place at the end.

use std::path::{Path, PathBuf};

use safetensors::Dtype;
use serde_json::Value;

use crate::io::{dtype_from_name, dtype_name, round_to, ShardWriter};
use crate::mergekit_yaml::MergeConfig;
use crate::methods::{self, Group};
use crate::plan::Plan;
use crate::vocab::Vocab;
use crate::MergeError;

pub struct Options {
    /// Seed of DARE's random drops.
    pub seed: u64,
    /// Largest output shard in bytes (mergekit's default 5 GB).
    pub shard_bytes: usize,
    /// Folder that relative model paths are taken from (mergekit: the working directory).
    pub base_dir: PathBuf,
}

pub struct Summary {
    pub tensors: usize,
    pub layers: usize,
    pub bytes: usize,
}

const TOKENIZER_FILES: &[&str] = &[
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer.model",
    "added_tokens.json",
    "merges.txt",
    "vocab.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
];

fn seed_for(seed: u64, name: &str) -> u64 {
    // FNV-1a of the tensor name, mixed with the run seed: draws do not depend on tensor order.
    name.bytes().fold(0xcbf2_9ce4_8422_2325 ^ seed, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Runs `cfg` into `out` (which must not exist); `progress(done, total)` after each tensor.
pub fn run(
    cfg: &MergeConfig,
    out: &Path,
    opts: &Options,
    mut progress: impl FnMut(usize, usize),
) -> Result<Summary, MergeError> {
    let c = |m: String| MergeError::Merge(m);
    if out.exists() {
        return Err(MergeError::Merge(format!(
            "{}: already exists; refusing to overwrite",
            out.display()
        )));
    }
    let spec = methods::spec(&cfg.merge_method).map_err(c)?;
    check_parameter_names(cfg, &spec).map_err(c)?;
    let in_dtype = cfg
        .dtype
        .as_deref()
        .map(dtype_from_name)
        .transpose()
        .map_err(c)?;
    let out_dtype_cfg = cfg
        .out_dtype
        .as_deref()
        .map(dtype_from_name)
        .transpose()
        .map_err(c)?;
    let resolve = |p: &str| {
        let path = PathBuf::from(p);
        if path.is_absolute() {
            path
        } else {
            opts.base_dir.join(path)
        }
    };
    let open =
        |p: &str| crate::load::open_model(p, &resolve).map_err(|e| format!("model {p}: {e}"));
    let plan = Plan::new(cfg, &spec, &open).map_err(c)?;
    let vocab = match &cfg.tokenizer_source {
        None => None,
        Some(src) => {
            Some(Vocab::build(&plan, src, cfg.base_model.as_deref(), &|p| resolve(p)).map_err(c)?)
        }
    };

    // Output dtypes and shapes, known before merging anything.
    let mut outputs = Vec::new();
    for t in &plan.tensors {
        let slice = &plan.slices[t.slice];
        let infos: Vec<(Dtype, Vec<usize>)> = slice
            .sources
            .iter()
            .zip(&t.inputs)
            .map(|(s, n)| {
                plan.models[s.model]
                    .info(n)
                    .map(|(d, sh)| (d, sh.to_vec()))
                    .expect("planned")
            })
            .collect();
        let mut shape = infos[0].1.clone();
        if let Some(v) = &vocab {
            if Vocab::is_vocab_tensor(&t.name) {
                shape[0] = v.len();
            }
        } else if let Some((k, bad)) = infos.iter().enumerate().find(|(_, i)| i.1 != shape) {
            return Err(c(format!(
                "`{}`: shape {:?} in {} but {:?} in {}; give tokenizer_source to align vocabularies",
                t.name, shape, plan.paths[slice.sources[0].model], bad.1, plan.paths[slice.sources[k].model]
            )));
        }
        // mergekit: inputs cast to `dtype`, else promoted; `out_dtype` applies when saving.
        let promoted = in_dtype.unwrap_or_else(|| {
            if infos.iter().any(|i| i.0 == Dtype::F32 || i.0 == Dtype::F64)
                || infos.windows(2).any(|w| w[0].0 != w[1].0)
            {
                Dtype::F32
            } else {
                infos[0].0
            }
        });
        outputs.push((
            t.name.clone(),
            out_dtype_cfg.unwrap_or(promoted),
            shape,
            promoted,
        ));
    }

    let staged = graft_models::fsio::StagedDir::new(out)
        .map_err(|e| c(format!("{}: {e}", out.display())))?;
    let tmp = staged.path().to_path_buf();
    let summary = (|| -> Result<Summary, MergeError> {
        let plan_out: Vec<(String, Dtype, Vec<usize>)> = outputs
            .iter()
            .map(|(n, d, s, _)| (n.clone(), *d, s.clone()))
            .collect();
        let file = match plan.models[plan.donor].adapter {
            true => "adapter_model",
            false => "model",
        };
        let mut writer = ShardWriter::new(&tmp, file, &plan_out, opts.shard_bytes);
        let total = plan.tensors.len();
        let mut bytes = 0;
        for (i, (t, (_, _, _, compute))) in plan.tensors.iter().zip(&outputs).enumerate() {
            let slice = &plan.slices[t.slice];
            let mut group = Vec::with_capacity(slice.sources.len());
            for (src, input) in slice.sources.iter().zip(&t.inputs) {
                group.push(plan.models[src.model].read(input).map_err(c)?);
            }
            if let (Some(voc), true) = (&vocab, Vocab::is_vocab_tensor(&t.name)) {
                let hidden = outputs[i].2[1];
                let tagged: Vec<(usize, Vec<f32>)> =
                    slice.sources.iter().map(|s| s.model).zip(group).collect();
                group = voc.align_group(&tagged, hidden);
            }
            for v in group.iter_mut() {
                round_to(v, *compute);
            }
            let (params, shared) = plan.parameters(t, &spec, &cfg.parameters).map_err(c)?;
            let g = Group {
                tensors: group,
                base: slice.base,
                params: &params,
                shared: &shared,
                seed: seed_for(opts.seed, &t.name),
            };
            let mut merged = (spec.merge)(g).map_err(|e| c(format!("`{}`: {e}", t.name)))?;
            round_to(&mut merged, *compute);
            writer.write(&t.name, &merged).map_err(c)?;
            bytes += merged.len() * 4;
            progress(i + 1, total);
        }
        writer.finish().map_err(c)?;
        write_config(&plan, cfg, &tmp, out_dtype_cfg.or(in_dtype), vocab.as_ref())?;
        copy_tokenizer(&plan, cfg, &tmp, &resolve)?;
        if let Some(v) = &vocab {
            let base = cfg
                .base_model
                .as_deref()
                .and_then(|b| plan.paths.iter().position(|p| p == b))
                .unwrap_or(plan.donor);
            if let Some(text) = v.union_tokenizer(&plan.models[base].dir).map_err(c)? {
                std::fs::write(tmp.join("tokenizer.json"), text).map_err(|e| c(e.to_string()))?;
            }
        }
        Ok(Summary {
            tensors: total,
            layers: plan.out_layers,
            bytes,
        })
    })()?;
    staged
        .commit()
        .map_err(|e| c(format!("{}: {e}", out.display())))?;
    Ok(summary)
}

/// Parameter names the method does not take are errors (mergekit ignores them silently).
fn check_parameter_names(cfg: &MergeConfig, spec: &methods::Spec) -> Result<(), String> {
    let mut known: Vec<String> = spec
        .input_params
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    known.extend((spec.shared_params)().keys().cloned());
    known.extend(spec.required_params.iter().map(|n| n.to_string()));
    let mut scopes: Vec<(&serde_json::Map<String, Value>, String)> =
        vec![(&cfg.parameters, "parameters".into())];
    for (i, m) in cfg.models.iter().flatten().enumerate() {
        scopes.push((&m.parameters, format!("models[{i}].parameters")));
    }
    for (i, s) in cfg.slices.iter().flatten().enumerate() {
        scopes.push((&s.parameters, format!("slices[{i}].parameters")));
        for (j, src) in s.sources.iter().enumerate() {
            scopes.push((
                &src.parameters,
                format!("slices[{i}].sources[{j}].parameters"),
            ));
        }
    }
    for (scope, at) in scopes {
        if let Some(k) = scope.keys().find(|k| !known.contains(k)) {
            return Err(format!(
                "{at}.{k}: `{}` takes no parameter `{k}` ({})",
                spec.name,
                known.join(", ")
            ));
        }
    }
    Ok(())
}

fn write_config(
    plan: &Plan,
    cfg: &MergeConfig,
    dir: &Path,
    dtype: Option<Dtype>,
    vocab: Option<&Vocab>,
) -> Result<(), MergeError> {
    let mut config = plan.models[plan.donor].config.clone();
    if let Value::Object(m) = &mut config {
        if let Some(d) = dtype {
            m.insert("dtype".into(), Value::from(dtype_name(d)));
            if m.contains_key("torch_dtype") {
                m.insert("torch_dtype".into(), Value::from(dtype_name(d)));
            }
        }
        if cfg.slices.is_some() {
            m.insert("num_hidden_layers".into(), Value::from(plan.out_layers));
        }
        if let Some(v) = vocab {
            m.insert("vocab_size".into(), Value::from(v.len()));
        }
    }
    let text =
        serde_json::to_string_pretty(&config).map_err(|e| MergeError::Merge(e.to_string()))?;
    // Merged adapters stay an adapter: PEFT's config beside PEFT's weights file.
    let name = match plan.models[plan.donor].adapter {
        true => "adapter_config.json",
        false => "config.json",
    };
    std::fs::write(dir.join(name), text).map_err(|e| MergeError::Merge(e.to_string()))
}

fn copy_tokenizer(
    plan: &Plan,
    cfg: &MergeConfig,
    dir: &Path,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<(), MergeError> {
    let from = match cfg.tokenizer_source.as_deref() {
        None | Some("base") | Some("union") => plan.models[plan.donor].dir.clone(),
        Some(p) => resolve(p),
    };
    // A GGUF (or base+LoRA) donor: the tokenizer files graft-models rebuilt.
    if cfg.tokenizer_source.is_none() {
        for (name, contents) in &plan.models[plan.donor].tokenizer_files {
            std::fs::write(dir.join(name), contents)
                .map_err(|e| MergeError::Merge(format!("{name}: {e}")))?;
        }
    }
    for f in TOKENIZER_FILES {
        let src = from.join(f);
        if src.exists() {
            std::fs::copy(&src, dir.join(f))
                .map_err(|e| MergeError::Merge(format!("{}: {e}", src.display())))?;
        }
    }
    if let Some(t) = &cfg.chat_template {
        if !t.contains("{%") && !t.contains("{{") {
            return Err(MergeError::Merge(format!(
                "chat_template `{t}`: give the Jinja template itself (named templates are not built in)"
            )));
        }
        std::fs::write(dir.join("chat_template.jinja"), t)
            .map_err(|e| MergeError::Merge(e.to_string()))?;
    }
    Ok(())
}
