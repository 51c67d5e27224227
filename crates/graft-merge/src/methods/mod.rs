//! Merge methods, one file each, with mergekit 0.1.5's semantics and parameter names; the
//! registry below is the list `merge_method` picks from.
//!
//! Every method sees one tensor group: the same tensor of each input (flattened, f32), the base's
//! index when the method uses one, each input's resolved parameters and the shared ones.

pub mod linear;
pub mod model_stock;
pub mod passthrough;
pub mod slerp;
pub mod task_arithmetic;

use serde_json::{Map, Value};

/// How a method uses `base_model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Required,
    Ignored,
}

pub struct Group<'a> {
    /// Owned, so a method may turn inputs into its output in place.
    pub tensors: Vec<Vec<f32>>,
    pub base: Option<usize>,
    /// Per input (the base too, when it has any), by parameter name.
    pub params: &'a [Map<String, Value>],
    pub shared: &'a Map<String, Value>,
    /// Seed for random sparsification (DARE), a function of the run seed and the tensor.
    pub seed: u64,
}

impl Group<'_> {
    pub fn num(&self, input: usize, name: &str) -> Result<f64, String> {
        self.params[input]
            .get(name)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("parameter `{name}`: expected a number"))
    }
    pub fn shared_num(&self, name: &str) -> Result<f64, String> {
        self.shared
            .get(name)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("parameter `{name}`: expected a number"))
    }
    pub fn flag(&self, name: &str) -> Result<bool, String> {
        match self.shared.get(name) {
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) if v.as_f64().is_some() => Ok(v.as_f64() != Some(0.0)),
            _ => Err(format!("parameter `{name}`: expected true or false")),
        }
    }
}

/// A method's contract: how it uses the base, how many inputs (base included), its per-input
/// parameters (name, default; `None` = required) — for the base too unless `non_base_only` —
/// its shared parameters with defaults, and the shared parameters without one that a config must
/// give (mergekit's `required=True`, e.g. slerp's `t`).
pub struct Spec {
    pub name: &'static str,
    pub base: Base,
    pub min_inputs: usize,
    pub max_inputs: Option<usize>,
    pub input_params: &'static [(&'static str, Option<f64>)],
    pub non_base_only: bool,
    pub shared_params: fn() -> Map<String, Value>,
    pub required_params: &'static [&'static str],
    pub merge: fn(Group) -> Result<Vec<f32>, String>,
}

pub fn registry() -> Vec<Spec> {
    vec![
        linear::SPEC,
        slerp::SPEC,
        passthrough::SPEC,
        model_stock::SPEC,
        task_arithmetic::TASK_ARITHMETIC,
        task_arithmetic::TIES,
        task_arithmetic::DARE_LINEAR,
        task_arithmetic::DARE_TIES,
    ]
}

pub fn spec(name: &str) -> Result<Spec, String> {
    let all = registry();
    let names: Vec<&str> = all.iter().map(|s| s.name).collect();
    let known = names.join(", ");
    all.into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| format!("merge_method `{name}` is not supported ({known})"))
}

pub(crate) fn shared(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}
