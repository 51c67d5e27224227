//! mergekit's YAML (`MergeConfiguration`, mergekit 0.1.5 `config.py`): `models` or `slices`
//! (`sources` with `layer_range`), `base_model`, `merge_method`, `parameters` (scalars, layer
//! gradients, `filter` lists), `dtype` / `out_dtype`, `tokenizer_source`, `chat_template`.
//! mergekit silently ignores keys it does not know; graft names them as errors, since a
//! misspelt key would otherwise change the merge without a word.
//!
//! A parameter setting evaluates for a tensor name and a layer position t ∈ [0, 1]: a scalar is
//! itself; a list of scalars is a gradient, interpolated at t·(len − 1); a list of
//! `{filter, value}` takes the first entry whose filter is a substring of the tensor name (no
//! filter, or `*`, matches all) — none matching means "not set here".

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::MergeError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MergeConfig {
    pub merge_method: String,
    #[serde(default)]
    pub models: Option<Vec<InputModel>>,
    #[serde(default)]
    pub slices: Option<Vec<OutputSlice>>,
    #[serde(default)]
    pub base_model: Option<String>,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub dtype: Option<String>,
    #[serde(default)]
    pub out_dtype: Option<String>,
    #[serde(default)]
    pub tokenizer_source: Option<String>,
    #[serde(default)]
    pub chat_template: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputModel {
    pub model: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputSlice {
    pub sources: Vec<InputSlice>,
    #[serde(default)]
    pub base_model: Option<String>,
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputSlice {
    pub model: String,
    pub layer_range: [usize; 2],
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

impl MergeConfig {
    pub fn read(path: &Path) -> Result<Self, MergeError> {
        let shown = path.display().to_string();
        let err = |m: String| MergeError::Config(shown.clone(), m);
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Self::parse(&text).map_err(err)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let yaml: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
        let value: Value = serde_json::to_value(yaml).map_err(|e| e.to_string())?;
        if let Some(m) = value.as_object() {
            for key in ["modules", "tokenizer"] {
                if m.contains_key(key) {
                    return Err(format!("key `{key}` is not supported by graft merge"));
                }
            }
            if m.contains_key("models") && m.contains_key("slices") {
                return Err("give exactly one of `models` and `slices`".into());
            }
        }
        let cfg: MergeConfig = serde_json::from_value(value).map_err(|e| {
            let msg = e.to_string();
            match msg.strip_prefix("unknown field ") {
                Some(rest) => format!(
                    "key {} is not supported by graft merge (mergekit would ignore it)",
                    rest.split(',').next().unwrap_or(rest)
                ),
                None => msg,
            }
        })?;
        if cfg.models.is_none() && cfg.slices.is_none() {
            return Err("give exactly one of `models` and `slices`".into());
        }
        if cfg.models.as_ref().is_some_and(|m| m.is_empty()) {
            return Err("`models`: empty (list the models to merge)".into());
        }
        if let Some(slices) = &cfg.slices {
            if slices.is_empty() {
                return Err("`slices`: empty (list the layer ranges to merge)".into());
            }
            if let Some(i) = slices.iter().position(|s| s.sources.is_empty()) {
                return Err(format!("`slices[{i}].sources`: empty"));
            }
        }
        Ok(cfg)
    }
}

/// A setting's value for `tensor` at layer position `t`; `None` when a filter list matches nothing.
pub fn evaluate(setting: &Value, tensor: &str, t: f64) -> Result<Option<Value>, String> {
    let is_scalar = |v: &Value| v.is_number() || v.is_boolean() || v.is_string();
    match setting {
        v if is_scalar(v) => Ok(Some(v.clone())),
        Value::Null => Ok(None),
        Value::Array(a) if a.is_empty() => Ok(None),
        Value::Array(a) if a.iter().all(is_scalar) => {
            if let Some(nums) = a.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>() {
                let scaled = t * (nums.len() - 1) as f64;
                let i0 = (scaled.floor() as usize).min(nums.len() - 1);
                let i1 = (i0 + 1).min(nums.len() - 1);
                let frac = scaled - i0 as f64;
                Ok(Some(Value::from((1.0 - frac) * nums[i0] + frac * nums[i1])))
            } else {
                Ok(Some(
                    a[((t * (a.len() - 1) as f64) as usize).min(a.len() - 1)].clone(),
                ))
            }
        }
        Value::Array(a) => {
            for item in a {
                if let Some(v) = conditional(item, tensor, t)? {
                    return Ok(Some(v));
                }
            }
            Ok(None)
        }
        Value::Object(_) => conditional(setting, tensor, t),
        other => Err(format!("parameter value {other} is not understood")),
    }
}

fn conditional(item: &Value, tensor: &str, t: f64) -> Result<Option<Value>, String> {
    let Some(m) = item.as_object() else {
        return Err(format!("expected `{{filter, value}}`, got {item}"));
    };
    if let Some(k) = m
        .keys()
        .find(|k| !["filter", "value"].contains(&k.as_str()))
    {
        return Err(format!(
            "key `{k}` in a filtered parameter is not supported (filter, value)"
        ));
    }
    let matches = match m.get("filter") {
        None | Some(Value::Null) => true,
        Some(Value::String(f)) => f == "*" || tensor.contains(f.as_str()),
        Some(other) => return Err(format!("filter {other}: expected a string")),
    };
    match (matches, m.get("value")) {
        (false, _) => Ok(None),
        (true, Some(v)) => evaluate(v, tensor, t),
        (true, None) => Err("a filtered parameter needs a `value`".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn gradients_and_filters_as_mergekit() {
        // mergekit 0.1.5 config.py evaluate_setting: [0, 0.5, 0.3, 0.7, 1] over 3 layers gives
        // t = 0, 0.3, 1 (layer 1: scaled = 2.0 → v[2]).
        let g = json!([0, 0.5, 0.3, 0.7, 1]);
        let at = |t: f64| evaluate(&g, "x", t).unwrap().unwrap().as_f64().unwrap();
        assert_eq!((at(0.0), at(0.5), at(1.0)), (0.0, 0.3, 1.0));
        assert!((at(0.125) - 0.25).abs() < 1e-12);
        let f = json!([{"filter": "self_attn", "value": [0.0, 1.0]}, {"value": 0.5}]);
        let v = |name: &str, t: f64| evaluate(&f, name, t).unwrap().unwrap().as_f64().unwrap();
        assert_eq!(v("model.layers.1.self_attn.q_proj.weight", 0.5), 0.5);
        assert_eq!(v("model.layers.2.self_attn.q_proj.weight", 1.0), 1.0);
        assert_eq!(v("model.layers.2.mlp.up_proj.weight", 1.0), 0.5);
        let only = json!([{"filter": "mlp", "value": 2}]);
        assert_eq!(evaluate(&only, "model.norm.weight", 0.0).unwrap(), None);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = MergeConfig::parse("models: [{model: a}]\nmerge_method: linear\nfrobnicate: 1\n")
            .unwrap_err();
        assert!(e.contains("frobnicate"), "{e}");
        let e = MergeConfig::parse("merge_method: linear\nmodels: [{model: a, weigth: 1}]\n")
            .unwrap_err();
        assert!(e.contains("weigth"), "{e}");
    }
}
