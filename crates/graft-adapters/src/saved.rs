//! PEFT's `modules_to_save`: whole modules trained (and saved beside the adapter) in full — the
//! embeddings and head when a vocabulary is adapted, a classifier head. A module matches a name when
//! its path is the name or ends with `.name`, as PEFT matches; its copy is stored under
//! `base_model.model.<path>.weight`. A name that matches nothing is an error (on a model with tied
//! embeddings there is no separate `lm_head`: save `embed_tokens`).

use std::collections::HashMap;

use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use graft_models::layers::linear::Linears;

use crate::peft_format::key_saved;
use crate::AdapterError;

fn matches(path: &str, names: &[String]) -> bool {
    names
        .iter()
        .any(|n| path == n || path.ends_with(&format!(".{n}")))
}

/// Applies `f` to the weight of every module `names` select; returns the module paths.
fn for_each_selected(
    model: &mut dyn Linears,
    names: &[String],
    mut f: impl FnMut(&str, &mut Tensor) -> Result<(), AdapterError>,
) -> Result<Vec<String>, AdapterError> {
    let mut done = Vec::new();
    for (path, w) in model.embeddings_mut() {
        if matches(&path, names) {
            f(&path, w)?;
            done.push(path);
        }
    }
    for (path, linear) in model.linears_mut() {
        if matches(&path, names) {
            if linear.quantized.is_some() {
                linear.weight = linear.dense_weight()?;
                linear.quantized = None;
            }
            f(&path, &mut linear.weight)?;
            done.push(path);
        }
    }
    if let Some(missing) = names
        .iter()
        .find(|n| !done.iter().any(|p| matches(p, std::slice::from_ref(n))))
    {
        return Err(AdapterError::Config(format!(
            "modules_to_save: `{missing}` matches no module of the model"
        )));
    }
    Ok(done)
}

/// Replaces the selected modules' weights by the adapter file's copies.
pub fn attach_saved(
    model: &mut dyn Linears,
    names: &[String],
    tensors: &HashMap<String, Tensor>,
) -> Result<Vec<String>, AdapterError> {
    for_each_selected(model, names, |path, w| {
        let key = key_saved(path);
        let t = tensors
            .get(&key)
            .ok_or_else(|| AdapterError::Tensor(key.clone(), "missing".into()))?;
        if t.dims() != w.dims() {
            return Err(AdapterError::Tensor(
                key,
                format!("shape {:?}, the model's is {:?}", t.dims(), w.dims()),
            ));
        }
        *w = t.to_dtype(w.dtype())?;
        Ok(())
    })
}

/// Makes the selected modules' weights trainable variables (copies of the base) in `varmap`.
pub fn init_saved(
    model: &mut dyn Linears,
    names: &[String],
    varmap: &VarMap,
) -> Result<Vec<String>, AdapterError> {
    let mut data = varmap
        .data()
        .lock()
        .map_err(|_| AdapterError::Config("varmap poisoned".into()))?;
    for_each_selected(model, names, |path, w| {
        let v = Var::from_tensor(&w.copy()?)?;
        *w = v.as_tensor().clone();
        data.insert(key_saved(path), v);
        Ok(())
    })
}

/// The selected modules' current weights by HF key (`<path>.weight`), for merged checkpoints.
pub fn saved_weights(
    model: &mut dyn Linears,
    names: &[String],
) -> Result<HashMap<String, Tensor>, AdapterError> {
    let mut out = HashMap::new();
    for_each_selected(model, names, |path, w| {
        out.insert(format!("{path}.weight"), w.clone());
        Ok(())
    })?;
    Ok(out)
}
