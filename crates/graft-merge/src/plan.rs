//! Which output tensors are made from which inputs (mergekit 0.1.5 `plan.py`): `models` become
//! one slice over every layer (a `base_model` not listed joins as a source without parameters);
//! each slice's layer idx of n gets t = idx/(n − 1) (t = 1 when n = 1), counted per slice; output
//! layers are numbered on across slices; the embeddings come from the first slice's sources and
//! the other non-layer tensors (final norm, LM head) from the last slice's, both at t = 0.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::io::ModelFiles;
use crate::mergekit_yaml::{evaluate, MergeConfig};
use crate::methods::{Base, Spec};

pub struct Source {
    pub model: usize,
    pub layer_start: usize,
    pub params: Map<String, Value>,
}

pub struct Slice {
    pub sources: Vec<Source>,
    pub base: Option<usize>,
    pub params: Map<String, Value>,
    pub layers: usize,
}

pub struct OutTensor {
    pub name: String,
    pub slice: usize,
    pub t: f64,
    /// Per source of the slice: the input tensor's name.
    pub inputs: Vec<String>,
}

pub struct Plan {
    pub models: Vec<ModelFiles>,
    pub paths: Vec<String>,
    pub slices: Vec<Slice>,
    pub tensors: Vec<OutTensor>,
    pub donor: usize,
    pub out_layers: usize,
}

fn layer_of(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("model.layers.")?;
    let (i, suffix) = rest.split_once('.')?;
    Some((i.parse().ok()?, suffix))
}

impl Plan {
    pub fn new(
        cfg: &MergeConfig,
        spec: &Spec,
        open: &dyn Fn(&str) -> Result<ModelFiles, String>,
    ) -> Result<Self, String> {
        let mut paths: Vec<String> = Vec::new();
        let mut models: Vec<ModelFiles> = Vec::new();
        let mut index = |p: &str, models: &mut Vec<ModelFiles>| -> Result<usize, String> {
            if let Some(i) = paths.iter().position(|x| x == p) {
                return Ok(i);
            }
            models.push(open(p)?);
            paths.push(p.to_string());
            Ok(paths.len() - 1)
        };
        let mut slices = Vec::new();
        if let Some(list) = &cfg.models {
            let mut sources = Vec::new();
            for m in list {
                let i = index(&m.model, &mut models)?;
                sources.push(Source {
                    model: i,
                    layer_start: 0,
                    params: m.parameters.clone(),
                });
            }
            let base = match &cfg.base_model {
                Some(b) => {
                    let i = index(b, &mut models)?;
                    Some(match sources.iter().position(|s| s.model == i) {
                        Some(k) => k,
                        None => {
                            sources.push(Source {
                                model: i,
                                layer_start: 0,
                                params: Map::new(),
                            });
                            sources.len() - 1
                        }
                    })
                }
                None => None,
            };
            let layers = models[sources[0].model].num_layers()?;
            for s in &sources {
                let n = models[s.model].num_layers()?;
                if n != layers {
                    return Err(format!(
                        "{} has {n} layers, {} has {layers}: use `slices` to merge layer ranges",
                        paths[s.model], paths[sources[0].model]
                    ));
                }
            }
            slices.push(Slice {
                sources,
                base,
                params: Map::new(),
                layers,
            });
        } else if let Some(list) = &cfg.slices {
            for (k, s) in list.iter().enumerate() {
                let mut sources = Vec::new();
                let mut layers = None;
                for src in &s.sources {
                    let [a, b] = src.layer_range;
                    let i = index(&src.model, &mut models)?;
                    let n = models[i].num_layers()?;
                    if a >= b || b > n {
                        return Err(format!(
                            "slices[{k}]: layer_range [{a}, {b}) does not fit {} ({n} layers)",
                            src.model
                        ));
                    }
                    if layers.is_some_and(|l| l != b - a) {
                        return Err(format!(
                            "slices[{k}]: every source must cover the same number of layers"
                        ));
                    }
                    layers = Some(b - a);
                    sources.push(Source {
                        model: i,
                        layer_start: a,
                        params: src.parameters.clone(),
                    });
                }
                let base = match s.base_model.as_ref().or(cfg.base_model.as_ref()) {
                    Some(b) => {
                        let i = index(b, &mut models)?;
                        Some(sources.iter().position(|s| s.model == i).ok_or_else(|| {
                            format!("slices[{k}]: base_model {b} is not one of the slice's sources")
                        })?)
                    }
                    None => None,
                };
                slices.push(Slice {
                    sources,
                    base,
                    params: s.parameters.clone(),
                    layers: layers.unwrap_or(0),
                });
            }
        }
        // One architecture (mergekit needs --allow-crimes to mix them; graft does not mix).
        let kind = |m: &ModelFiles| m.config["model_type"].as_str().unwrap_or("").to_string();
        let first = models.iter().position(|m| !m.adapter);
        if let Some(f) = first {
            for (i, m) in models.iter().enumerate().filter(|(_, m)| !m.adapter) {
                if kind(m) != kind(&models[f]) {
                    return Err(format!(
                        "{} is a `{}` model but {} is `{}`: models of different architectures do not merge",
                        paths[i], kind(m), paths[f], kind(&models[f])
                    ));
                }
            }
        }
        if models.iter().any(|m| m.adapter) && models.iter().any(|m| !m.adapter) {
            return Err(
                "adapters merge with adapters; merge a LoRA into its base with `BASE+ADAPTER`"
                    .into(),
            );
        }
        for (k, s) in slices.iter().enumerate() {
            if spec.base == Base::Required && s.base.is_none() {
                return Err(format!(
                    "merge_method `{}` needs a base_model (slice {k})",
                    spec.name
                ));
            }
            let n = s.sources.len();
            if n < spec.min_inputs || spec.max_inputs.is_some_and(|m| n > m) {
                let want = match spec.max_inputs {
                    Some(m) if m == spec.min_inputs => format!("exactly {m}"),
                    Some(m) => format!("{}..={m}", spec.min_inputs),
                    None => format!("at least {}", spec.min_inputs),
                };
                return Err(format!(
                    "merge_method `{}` takes {want} models (base included), got {n}",
                    spec.name
                ));
            }
        }

        // Output tensors: embeddings, layers, then the rest, named by the donor (first source).
        let donor = slices[0].sources[0].model;
        let mut non_layer: Vec<String> = models[donor]
            .names()
            .filter(|n| layer_of(n).is_none())
            .cloned()
            .collect();
        non_layer.sort();
        let mut tensors = Vec::new();
        let input_names =
            |s: &Slice, f: &dyn Fn(&Source) -> String| s.sources.iter().map(f).collect::<Vec<_>>();
        for n in non_layer.iter().filter(|n| n.contains("embed_tokens")) {
            tensors.push(OutTensor {
                name: n.clone(),
                slice: 0,
                t: 0.0,
                inputs: input_names(&slices[0], &|_| n.clone()),
            });
        }
        let mut out_layer = 0;
        for (k, s) in slices.iter().enumerate() {
            let first = &s.sources[0];
            let mut suffixes: Vec<String> = models[first.model]
                .names()
                .filter_map(|n| {
                    layer_of(n)
                        .filter(|(i, _)| *i == first.layer_start)
                        .map(|(_, x)| x.to_string())
                })
                .collect();
            suffixes.sort();
            for idx in 0..s.layers {
                let t = if s.layers == 1 {
                    1.0
                } else {
                    idx as f64 / (s.layers - 1) as f64
                };
                for suffix in &suffixes {
                    tensors.push(OutTensor {
                        name: format!("model.layers.{out_layer}.{suffix}"),
                        slice: k,
                        t,
                        inputs: input_names(s, &|src| {
                            format!("model.layers.{}.{suffix}", src.layer_start + idx)
                        }),
                    });
                }
                out_layer += 1;
            }
        }
        let last = slices.len() - 1;
        for n in non_layer.iter().filter(|n| !n.contains("embed_tokens")) {
            tensors.push(OutTensor {
                name: n.clone(),
                slice: last,
                t: 0.0,
                inputs: input_names(&slices[last], &|_| n.clone()),
            });
        }
        // A tied model has no LM head: its embeddings stand in (mergekit's `tied_names`).
        for t in tensors.iter_mut().filter(|t| t.name == "lm_head.weight") {
            for (src, input) in slices[t.slice].sources.iter().zip(t.inputs.iter_mut()) {
                if !models[src.model].has(input) {
                    *input = "model.embed_tokens.weight".into();
                }
            }
        }
        for t in &tensors {
            for (src, input) in slices[t.slice].sources.iter().zip(&t.inputs) {
                if !models[src.model].has(input) {
                    return Err(format!(
                        "{} has no tensor `{input}` (needed for `{}`)",
                        paths[src.model], t.name
                    ));
                }
            }
        }
        let donor = slices[0].base.map_or(donor, |b| slices[0].sources[b].model);
        Ok(Self {
            models,
            paths,
            slices,
            tensors,
            donor,
            out_layers: out_layer,
        })
    }

    /// The parameters of output tensor `t`: per source, then shared (mergekit's precedence:
    /// source, slice, global; per-source filters see the input name, shared ones the output's).
    pub fn parameters(
        &self,
        t: &OutTensor,
        spec: &Spec,
        global: &Map<String, Value>,
    ) -> Result<(Vec<Map<String, Value>>, Map<String, Value>), String> {
        let slice = &self.slices[t.slice];
        let mut per = Vec::new();
        for (k, (src, input)) in slice.sources.iter().zip(&t.inputs).enumerate() {
            let mut m = Map::new();
            if !(spec.non_base_only && slice.base == Some(k)) {
                for (name, default) in spec.input_params {
                    let mut v = None;
                    for scope in [&src.params, &slice.params, global] {
                        if let Some(s) = scope.get(*name) {
                            if let Some(x) = evaluate(s, input, t.t)? {
                                v = Some(x);
                                break;
                            }
                        }
                    }
                    let v = match (v, default) {
                        (Some(v), _) => v,
                        (None, Some(d)) => Value::from(*d),
                        (None, None) => {
                            return Err(format!(
                                "parameter `{name}` is missing for {}.{input}",
                                self.paths[src.model]
                            ))
                        }
                    };
                    m.insert(name.to_string(), v);
                }
            }
            per.push(m);
        }
        let mut shared = (spec.shared_params)();
        let mut names: Vec<String> = shared.keys().cloned().collect();
        names.extend(spec.required_params.iter().map(|n| n.to_string()));
        let mut seen: HashMap<String, bool> = HashMap::new();
        for name in names {
            for scope in [&slice.params, global] {
                if let Some(s) = scope.get(&name) {
                    if let Some(x) = evaluate(s, &t.name, t.t)? {
                        shared.insert(name.clone(), x);
                        seen.insert(name.clone(), true);
                        break;
                    }
                }
            }
        }
        if let Some(name) = spec
            .required_params
            .iter()
            .find(|n| !seen.contains_key(**n))
        {
            return Err(format!("parameter `{name}` is missing for `{}`", t.name));
        }
        Ok((per, shared))
    }
}
