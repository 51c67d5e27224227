//! Objectives by recipe name: `objective = { kind = "sft" }`. Adding one = a file + a line here.

use serde_json::Value;

use super::dpo::{Dpo, DpoLoss};
use super::kto::Kto;
use super::lipo::Lipo;
use super::minor_dpo::MinorDpo;
use super::orpo::Orpo;
use super::simpo::SimPo;
use super::{lm::Lm, minor_sft::MinorSft, Objective};

fn num(spec: &Value, key: &str, default: f64) -> Result<f64, String> {
    match spec.get(key) {
        None => Ok(default),
        Some(v) => v.as_f64().ok_or(format!("objective.{key}: not a number")),
    }
}

/// Builds the objective a recipe's `[objective]` table names; unknown kinds and keys are errors.
pub fn objective(spec: &Value) -> Result<Box<dyn Objective>, String> {
    let kind = spec
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("objective.kind: missing")?;
    let allowed: &[&str] = match kind {
        "lm" | "sft" => &["kind", "z_loss"],
        "minor_sft" => &["kind", "beta", "reference"],
        "dpo" | "ipo" | "slic" | "dpo_norm" => &["kind", "beta"],
        "cdpo" | "robust" => &["kind", "beta", "label_smoothing"],
        "simpo" => &["kind", "beta", "gamma", "label_smoothing"],
        "orpo" | "minor_dpo" | "lipo" => &["kind", "beta"],
        "kto" => &["kind", "beta", "desirable_weight", "undesirable_weight"],
        other => {
            return Err(format!(
                "objective.kind: `{other}` is not known (lm, sft, minor_sft, dpo, cdpo, robust, ipo, dpo_norm, slic, simpo, orpo, kto, minor_dpo, lipo)"
            ))
        }
    };
    if let Some(obj) = spec.as_object() {
        if let Some(bad) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!(
                "objective.{bad}: not a parameter of `{kind}` ({})",
                allowed.join(", ")
            ));
        }
    }
    Ok(match kind {
        "lm" => Box::new(Lm {
            z_loss: num(spec, "z_loss", 0.0)?,
            completion_only: false,
        }),
        "sft" => Box::new(Lm {
            z_loss: num(spec, "z_loss", 0.0)?,
            completion_only: true,
        }),
        "robust" if !(0.0..0.5).contains(&num(spec, "label_smoothing", 0.0)?) => {
            return Err("objective.label_smoothing: must be in [0, 0.5) for robust".into())
        }
        "dpo" | "cdpo" | "ipo" | "slic" | "robust" | "dpo_norm" => Box::new(Dpo {
            beta: num(spec, "beta", 0.1)?,
            label_smoothing: num(spec, "label_smoothing", 0.0)?,
            loss: match kind {
                "dpo" => DpoLoss::Sigmoid,
                "cdpo" => DpoLoss::Conservative,
                "robust" => DpoLoss::Robust,
                "dpo_norm" => DpoLoss::Normalized,
                "ipo" => DpoLoss::Ipo,
                _ => DpoLoss::Hinge,
            },
        }),
        // TRL's CPOConfig defaults (the paper tunes β in 2–2.5 with γ/β ≈ 0.25–0.5).
        "simpo" => Box::new(SimPo {
            beta: num(spec, "beta", 0.1)?,
            gamma: num(spec, "gamma", 0.5)?,
            label_smoothing: num(spec, "label_smoothing", 0.0)?,
        }),
        // TRL's KTOConfig defaults.
        "kto" => Box::new(Kto {
            beta: num(spec, "beta", 0.1)?,
            desirable_weight: num(spec, "desirable_weight", 1.0)?,
            undesirable_weight: num(spec, "undesirable_weight", 1.0)?,
        }),
        // TRL's ORPOConfig default λ (called beta there).
        "orpo" => Box::new(Orpo {
            beta: num(spec, "beta", 0.1)?,
        }),
        "minor_dpo" => Box::new(MinorDpo {
            beta: num(spec, "beta", 0.1)?,
        }),
        "lipo" => Box::new(Lipo {
            beta: num(spec, "beta", 0.1)?,
        }),
        // The paper fixes no default β: the recipe must choose one.
        _ => Box::new(MinorSft {
            beta: spec
                .get("beta")
                .and_then(Value::as_f64)
                .ok_or("objective.beta: required for minor_sft")?,
        }),
    })
}
