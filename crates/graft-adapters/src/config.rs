//! `adapter_config.json` as PEFT writes it, and PEFT's rules for which modules an adapter wraps.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The adapter methods `peft_type` names: PEFT's LoRA (DoRA is LoRA with `use_dora`), and
/// graft's own SLTrain, MTLoRA and LST in PEFT's file layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PeftType {
    Lora,
    Sltrain,
    Mtlora,
    Lst,
}

/// PEFT's LoRA config fields (`peft_type = "LORA"`), with PEFT's defaults. Fields graft does not use
/// are kept so a config read from PEFT is written back unchanged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoraConfig {
    #[serde(default = "lora")]
    pub peft_type: PeftType,
    #[serde(default = "causal_lm")]
    pub task_type: Option<String>,
    #[serde(default = "eight")]
    pub r: usize,
    #[serde(default = "eight_f", serialize_with = "whole_as_int")]
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    /// A list of module-name suffixes, a regex matched against whole names, or `"all-linear"`.
    #[serde(default)]
    pub target_modules: Option<Value>,
    /// Layer indices to wrap (an int or a list); all when absent.
    #[serde(default)]
    pub layers_to_transform: Option<Value>,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default = "none")]
    pub bias: String,
    #[serde(default)]
    pub modules_to_save: Option<Value>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

fn lora() -> PeftType {
    PeftType::Lora
}
fn causal_lm() -> Option<String> {
    Some("CAUSAL_LM".into())
}
fn eight() -> usize {
    8
}
fn eight_f() -> f64 {
    8.0
}
/// PEFT writes `lora_alpha = 8`, not `8.0`; keep the file as PEFT would write it.
fn whole_as_int<S: serde::Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        s.serialize_i64(*x as i64)
    } else {
        s.serialize_f64(*x)
    }
}

fn none() -> String {
    "none".into()
}

impl LoraConfig {
    /// The LoRA update's multiplier: `alpha / r`, or `alpha / sqrt(r)` with rsLoRA.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    /// Checks what graft supports; errors name the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.peft_type == PeftType::Lst {
            // A side network (lst.rs): its shape is checked against the backbone when loaded.
            return match self.other.get("reduction").and_then(Value::as_u64) {
                Some(r) if r >= 1 => Ok(()),
                _ => Err("LST: reduction: missing or not a positive integer".into()),
            };
        }
        if self.peft_type == PeftType::Mtlora && self.task_names().is_empty() {
            return Err("MTLORA: task_names: give the tasks (one or more names)".into());
        }
        if self.sltrain() && (self.use_dora || self.use_rslora) {
            return Err("SLTRAIN: use_dora and use_rslora do not apply".into());
        }
        if let Some(d) = self.sparse_density() {
            if !(d > 0.0 && d <= 1.0) {
                return Err(format!("sparse_density: must be in (0, 1], got {d}"));
            }
        }
        if self.r == 0 {
            return Err("r: must be ≥ 1".into());
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(format!(
                "lora_dropout: must be in [0, 1), got {}",
                self.lora_dropout
            ));
        }
        if self.bias != "none" {
            return Err(format!("bias: `{}` is not supported (none)", self.bias));
        }
        self.modules_to_save()?;
        if self.target_modules.as_ref().is_none_or(|t| t.is_null()) {
            return Err("target_modules: missing".into());
        }
        Ok(())
    }

    /// An LST side network's shape (lst.rs): `reduction`, `side_layers` (default all) and
    /// `rope_pairs` (default evenly spaced).
    pub fn side_spec(
        &self,
        backbone: &graft_models::DecoderConfig,
    ) -> Result<crate::lst::SideSpec, String> {
        let ints = |v: &Value| -> Option<Vec<usize>> {
            v.as_array()?
                .iter()
                .map(|x| x.as_u64().map(|x| x as usize))
                .collect()
        };
        let r = self
            .other
            .get("reduction")
            .and_then(Value::as_u64)
            .unwrap_or(8) as usize;
        let taps = match self.other.get("side_layers") {
            None | Some(Value::Null) => None,
            Some(v) => Some(ints(v).ok_or("LST: side_layers: expected a list of layer indices")?),
        };
        let mut spec = crate::lst::SideSpec::even(backbone, r, taps.as_deref())?;
        if let Some(v) = self.other.get("rope_pairs") {
            spec.rope_pairs = v
                .as_array()
                .and_then(|a| a.iter().map(ints).collect::<Option<Vec<_>>>())
                .ok_or("LST: rope_pairs: expected a list of lists of pair indices")?;
        }
        Ok(spec)
    }

    /// An SLTrain adapter (sltrain.rs): a low-rank product plus a fixed-support sparse matrix.
    pub fn sltrain(&self) -> bool {
        self.peft_type == PeftType::Sltrain
    }

    /// SLTrain's density δ of the sparse part (default 0.03).
    pub fn sparse_density(&self) -> Option<f64> {
        self.sltrain().then(|| {
            self.other
                .get("sparse_density")
                .and_then(Value::as_f64)
                .unwrap_or(0.03)
        })
    }

    /// SLTrain's seed for the sparse supports.
    pub fn sparse_seed(&self) -> u64 {
        self.other
            .get("sparse_seed")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    /// MTLoRA's tasks, in task-id order (empty for other adapters).
    pub fn task_names(&self) -> Vec<String> {
        match (self.peft_type, self.other.get("task_names")) {
            (PeftType::Mtlora, Some(Value::Array(a))) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// MTLoRA's task-specific rank (default 4, the authors' released configs).
    pub fn task_r(&self) -> usize {
        self.other
            .get("task_r")
            .and_then(Value::as_u64)
            .unwrap_or(4) as usize
    }

    /// MTLoRA's layers with task-specific updates (default: the last layer of each quarter).
    pub fn task_layers(&self, layers: usize) -> Vec<usize> {
        match self.other.get("task_layers").and_then(Value::as_array) {
            Some(a) => a
                .iter()
                .filter_map(|v| v.as_u64().map(|x| x as usize))
                .collect(),
            None => crate::mtlora::default_task_layers(layers),
        }
    }

    /// `modules_to_save` as names (a module matches when its path is the name or ends with
    /// `.name`, as PEFT matches them).
    pub fn modules_to_save(&self) -> Result<Vec<String>, String> {
        match &self.modules_to_save {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("modules_to_save: `{v}` is not a module name"))
                })
                .collect(),
            Some(other) => Err(format!(
                "modules_to_save: expected a list of names, got {other}"
            )),
        }
    }

    fn layer_allowed(&self, module: &str) -> bool {
        let Some(spec) = &self.layers_to_transform else {
            return true;
        };
        let layer = module
            .split(".layers.")
            .nth(1)
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse::<u64>().ok());
        let Some(layer) = layer else { return false };
        match spec {
            Value::Number(n) => n.as_u64() == Some(layer),
            Value::Array(items) => items.iter().any(|v| v.as_u64() == Some(layer)),
            _ => true,
        }
    }

    /// Whether PEFT would wrap the linear `module` (a name like `model.layers.0.self_attn.q_proj`):
    /// a list matches whole names or `.suffix`es, a string is a regex matched against the whole name,
    /// `"all-linear"` is every linear layer but the LM head.
    pub fn targets(&self, module: &str) -> Result<bool, String> {
        let hit = match &self.target_modules {
            Some(Value::String(s)) if s == "all-linear" => true,
            Some(Value::String(pattern)) => full_match(pattern, module)?,
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .any(|t| module == t || module.ends_with(&format!(".{t}"))),
            _ => false,
        };
        Ok(hit && self.layer_allowed(module))
    }
}

/// A small regex subset for PEFT's string `target_modules`: alternation of literal names with `.*`
/// wildcards (what PEFT examples use, e.g. `.*\.(q_proj|v_proj)`). Anything else is refused by name.
fn full_match(pattern: &str, name: &str) -> Result<bool, String> {
    let unsupported = || {
        format!("target_modules: regex `{pattern}` uses syntax graft does not support (literal names, `.*`, `\\.`, `(a|b)`)")
    };
    // Expand one level of (a|b) groups into alternatives.
    fn expand(p: &str) -> Vec<String> {
        match (p.find('('), p.find(')')) {
            (Some(open), Some(close)) if open < close => {
                let (head, inner, tail) = (&p[..open], &p[open + 1..close], &p[close + 1..]);
                inner
                    .split('|')
                    .flat_map(|alt| expand(&format!("{head}{alt}{tail}")))
                    .collect()
            }
            _ => p.split('|').map(str::to_string).collect(),
        }
    }
    for alt in expand(pattern) {
        let literal = alt.replace("\\.", "\u{1}");
        if literal.chars().any(|c| "[]{}+?^$\\".contains(c)) {
            return Err(unsupported());
        }
        let raw: Vec<&str> = literal.split(".*").collect();
        // A bare `.` (any character) outside `.*` is beyond this subset.
        if raw.iter().any(|p| p.contains('.')) {
            return Err(unsupported());
        }
        let parts: Vec<String> = raw.iter().map(|p| p.replace('\u{1}', ".")).collect();
        if glob(&parts, name) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whole-string match of literal `parts` joined by `.*`.
fn glob(parts: &[String], name: &str) -> bool {
    let (first, rest) = match parts.split_first() {
        Some(x) => x,
        None => return name.is_empty(),
    };
    let Some(mut remaining) = name.strip_prefix(first.as_str()) else {
        return false;
    };
    if rest.is_empty() {
        return remaining.is_empty();
    }
    for (i, part) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        if last {
            return remaining.ends_with(part.as_str());
        }
        match remaining.find(part.as_str()) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(targets: Value, layers: Option<Value>) -> LoraConfig {
        serde_json::from_value(serde_json::json!({"r": 4, "lora_alpha": 8, "target_modules": targets, "layers_to_transform": layers})).unwrap()
    }

    #[test]
    fn peft_target_rules() {
        let q = "model.layers.0.self_attn.q_proj";
        let up = "model.layers.2.mlp.up_proj";
        let c = cfg(serde_json::json!(["q_proj", "v_proj"]), None);
        assert!(c.targets(q).unwrap() && !c.targets(up).unwrap());
        let c = cfg(
            serde_json::json!("all-linear"),
            Some(serde_json::json!([0])),
        );
        assert!(c.targets(q).unwrap() && !c.targets(up).unwrap());
        let c = cfg(serde_json::json!(".*\\.(up_proj|q_proj)"), None);
        assert!(
            c.targets(q).unwrap()
                && c.targets(up).unwrap()
                && !c.targets("model.layers.0.self_attn.k_proj").unwrap()
        );
        assert!(cfg(serde_json::json!("q_proj[0-9]+"), None)
            .targets(q)
            .is_err());
        assert_eq!(cfg(serde_json::json!(["q_proj"]), None).scale(), 2.0);
    }
}
