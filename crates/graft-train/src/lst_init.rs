//! Starts an LST side network (graft-adapters lst.rs) from the pruned backbone once the training
//! rows are known: `side_init = "fisher"` (the authors' scripts' default, `fisher-v2`) scores
//! every backbone weight by the empirical Fisher — Σ over `fisher_samples` rows (1024, theirs) of
//! the squared gradient of the row's own loss, one row at a time as their
//! `calculate_the_importance_label` — `"magnitude"` by |W|, `"random"` keeps the random start.
//!
//! Shapes: a row's ids (1, T); log-probs (1, T−1); the loss is the mean NLL of its targets.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use graft_models::{next_token_logprobs, Decoder, ModelSource};

use crate::TrainError;
use graft_data::rows::TrainRow;
use graft_models::Model;

/// Replaces the random side blocks of `model`'s ladder with pruned backbone blocks; records the
/// kept rotary pairs in the adapter config. `rows`: the training rows, in file order.
pub fn init_side<'a>(
    model: &mut Model,
    source: &ModelSource,
    varmap: &VarMap,
    adapter: &mut graft_adapters::LoraConfig,
    a: &crate::recipe::AdapterSection,
    rows: impl Iterator<Item = &'a TrainRow>,
    seed: u64,
    progress: bool,
) -> Result<(), TrainError> {
    let Some(backbone) = model.as_decoder_mut() else {
        return Ok(());
    };
    let init = a.side_init.as_deref().unwrap_or("fisher");
    if init == "random" {
        return Ok(());
    }
    // The backbone's weights, read once: the Fisher pass and the pruning both use them.
    let weights = source.tensors(DType::F32)?;
    let importance = match init {
        "magnitude" => HashMap::new(),
        "fisher" => fisher(
            source,
            &weights,
            rows,
            a.fisher_samples.unwrap_or(1024),
            progress,
        )?,
        other => {
            return Err(TrainError::Recipe(format!(
                "adapter.side_init: `{other}` is not known (fisher, magnitude, random)"
            )))
        }
    };
    let spec = adapter
        .side_spec(&backbone.cfg)
        .map_err(TrainError::Recipe)?;
    let (spec, side_weights) = graft_adapters::lst_prune::pruned_side(
        &backbone.cfg,
        spec.reduction,
        &spec.taps,
        &weights,
        &importance,
    )
    .map_err(TrainError::Recipe)?;
    adapter
        .other
        .insert("rope_pairs".into(), serde_json::json!(spec.rope_pairs));
    adapter
        .other
        .insert("side_init".into(), serde_json::json!(init));
    let ladder =
        graft_adapters::lst::Ladder::new(&backbone.cfg, spec, varmap, seed, Some(&side_weights))
            .map_err(|e| TrainError::Recipe(format!("adapter: {e}")))?;
    backbone.side = Some(std::sync::Arc::new(ladder));
    Ok(())
}

/// Σ_rows (∂L_row/∂W)² for every backbone weight, over the first `n` rows with targets.
fn fisher<'a>(
    source: &ModelSource,
    weights: &HashMap<String, Tensor>,
    rows: impl Iterator<Item = &'a TrainRow>,
    n: usize,
    progress: bool,
) -> Result<HashMap<String, Tensor>, TrainError> {
    let device = Device::Cpu;
    let cfg = source.decoder_config()?;
    let varmap = VarMap::new();
    let model = Decoder::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    crate::net::set_vars(&varmap, weights, &source.path)?;
    let vars: Vec<(String, candle_core::Var)> = varmap
        .data()
        .lock()
        .map_err(|_| TrainError::Recipe("varmap poisoned".into()))?
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let bar = match progress {
        true => indicatif::ProgressBar::new(n as u64),
        false => indicatif::ProgressBar::hidden(),
    };
    bar.set_message("LST: Fisher importance");
    let mut acc: HashMap<String, Tensor> = HashMap::new();
    let mut used = 0;
    for row in rows {
        if used == n {
            break;
        }
        let t = row.input_ids.len();
        let mask: Vec<f32> = row
            .targets
            .iter()
            .skip(1)
            .map(|&b| b as u8 as f32)
            .collect();
        let count: f32 = mask.iter().sum();
        if t < 2 || count == 0.0 || row.encoder_ids.is_some() {
            continue;
        }
        let ids = Tensor::new(row.input_ids.as_slice(), &device)?.unsqueeze(0)?;
        let logits = match &row.packed {
            Some((pos, seg)) => model.forward_packed(
                &ids,
                &Tensor::new(pos.as_slice(), &device)?.unsqueeze(0)?,
                &Tensor::new(seg.as_slice(), &device)?.unsqueeze(0)?,
                false,
            )?,
            None => model.forward(&ids, None, false)?,
        };
        let lp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let lp = next_token_logprobs(&lp, &ids)?;
        let mask = Tensor::from_vec(mask, (1, t - 1), &device)?;
        let loss = ((lp * mask)?.sum_all()? / (-count as f64))?;
        let grads = loss.backward()?;
        for (name, var) in &vars {
            if let Some(g) = grads.get(var) {
                let sq = g.sqr()?;
                let sum = match acc.remove(name) {
                    Some(a) => (a + sq)?,
                    None => sq,
                };
                acc.insert(name.clone(), sum);
            }
        }
        used += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    if used == 0 {
        return Err(TrainError::Recipe(
            "adapter.side_init = \"fisher\": no training row has targets to score".into(),
        ));
    }
    Ok(acc)
}
