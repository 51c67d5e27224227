//! Objectives by recipe name: `objective = { kind = "sft" }`. Adding one = a file + a line in
//! [`KINDS`] + its arm in [`objective`] (the match is exhaustive, so a new kind does not compile
//! until it is built).

use serde_json::Value;

use super::dpo::{Dpo, DpoLoss};
use super::kto::Kto;
use super::lipo::Lipo;
use super::minor_dpo::MinorDpo;
use super::orpo::Orpo;
use super::simpo::SimPo;
use super::{lm::Lm, minor_sft::MinorSft, Objective};

/// The objective kinds a recipe can name.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Lm,
    Sft,
    MinorSft,
    Dpo(DpoLoss),
    SimPo,
    Orpo,
    MinorDpo,
    Lipo,
    Kto,
}

/// Recipe name, kind, and the keys its table may hold.
const KINDS: &[(&str, Kind, &[&str])] = &[
    ("lm", Kind::Lm, &["z_loss"]),
    ("sft", Kind::Sft, &["z_loss"]),
    ("minor_sft", Kind::MinorSft, &["beta", "reference"]),
    ("dpo", Kind::Dpo(DpoLoss::Sigmoid), &["beta"]),
    (
        "cdpo",
        Kind::Dpo(DpoLoss::Conservative),
        &["beta", "label_smoothing"],
    ),
    (
        "robust",
        Kind::Dpo(DpoLoss::Robust),
        &["beta", "label_smoothing"],
    ),
    ("ipo", Kind::Dpo(DpoLoss::Ipo), &["beta"]),
    ("dpo_norm", Kind::Dpo(DpoLoss::Normalized), &["beta"]),
    ("slic", Kind::Dpo(DpoLoss::Hinge), &["beta"]),
    ("simpo", Kind::SimPo, &["beta", "gamma", "label_smoothing"]),
    ("orpo", Kind::Orpo, &["beta"]),
    (
        "kto",
        Kind::Kto,
        &["beta", "desirable_weight", "undesirable_weight"],
    ),
    ("minor_dpo", Kind::MinorDpo, &["beta"]),
    ("lipo", Kind::Lipo, &["beta"]),
];

fn num(spec: &Value, key: &str, default: f64) -> Result<f64, String> {
    match spec.get(key) {
        None => Ok(default),
        Some(v) => v.as_f64().ok_or(format!("objective.{key}: not a number")),
    }
}

/// The kind a recipe's `objective.kind` names, after checking the table's keys.
fn kind_of(spec: &Value) -> Result<(&'static str, Kind), String> {
    let name = spec
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("objective.kind: missing")?;
    let Some(&(name, kind, allowed)) = KINDS.iter().find(|k| k.0 == name) else {
        let known: Vec<&str> = KINDS.iter().map(|k| k.0).collect();
        return Err(format!(
            "objective.kind: `{name}` is not known ({})",
            known.join(", ")
        ));
    };
    if let Some(obj) = spec.as_object() {
        if let Some(bad) = obj
            .keys()
            .find(|k| *k != "kind" && !allowed.contains(&k.as_str()))
        {
            let hint = match bad.as_str() {
                "reference" | "ref_model" => {
                    " (the reference model is set in [reference] path = \"...\")"
                }
                "lr" | "learning_rate" | "steps" | "batch_size" => {
                    " (training settings go in [train])"
                }
                _ => "",
            };
            return Err(format!(
                "objective.{bad}: not a parameter of `{name}` (kind, {}){hint}",
                allowed.join(", ")
            ));
        }
    }
    Ok((name, kind))
}

/// Builds the objective a recipe's `[objective]` table names; unknown kinds and keys are errors.
pub fn objective(spec: &Value) -> Result<Box<dyn Objective>, String> {
    let (name, kind) = kind_of(spec)?;
    let beta = num(spec, "beta", 0.1)?;
    let label_smoothing = num(spec, "label_smoothing", 0.0)?;
    Ok(match kind {
        Kind::Lm | Kind::Sft => Box::new(Lm {
            z_loss: num(spec, "z_loss", 0.0)?,
            completion_only: kind == Kind::Sft,
        }),
        Kind::Dpo(DpoLoss::Robust) if !(0.0..0.5).contains(&label_smoothing) => {
            return Err(format!(
                "objective.label_smoothing: must be in [0, 0.5) for {name}"
            ))
        }
        Kind::Dpo(loss) => Box::new(Dpo {
            beta,
            label_smoothing,
            loss,
        }),
        // TRL's CPOConfig defaults (the paper tunes β in 2–2.5 with γ/β ≈ 0.25–0.5).
        Kind::SimPo => Box::new(SimPo {
            beta,
            gamma: num(spec, "gamma", 0.5)?,
            label_smoothing,
        }),
        // TRL's KTOConfig defaults.
        Kind::Kto => Box::new(Kto {
            beta,
            desirable_weight: num(spec, "desirable_weight", 1.0)?,
            undesirable_weight: num(spec, "undesirable_weight", 1.0)?,
        }),
        // TRL's ORPOConfig default λ (called beta there).
        Kind::Orpo => Box::new(Orpo { beta }),
        Kind::MinorDpo => Box::new(MinorDpo { beta }),
        Kind::Lipo => Box::new(Lipo { beta }),
        // The paper fixes no default β: the recipe must choose one.
        Kind::MinorSft => Box::new(MinorSft {
            beta: spec
                .get("beta")
                .and_then(Value::as_f64)
                .ok_or("objective.beta: required for minor_sft")?,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_builds_and_names_itself() {
        for (name, _, keys) in KINDS {
            let mut spec = serde_json::json!({"kind": name});
            if keys.contains(&"beta") {
                spec["beta"] = serde_json::json!(0.5);
            }
            let obj = objective(&spec).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(obj.name(), *name);
        }
    }

    #[test]
    fn unknown_kinds_and_keys_are_errors() {
        let e = objective(&serde_json::json!({"kind": "dpoo"}))
            .err()
            .unwrap();
        assert!(
            e.contains("`dpoo` is not known") && e.contains("dpo_norm"),
            "{e}"
        );
        let e = objective(&serde_json::json!({"kind": "dpo", "reference": "x"}))
            .err()
            .unwrap();
        assert!(e.contains("[reference] path"), "{e}");
        let e = objective(&serde_json::json!({"kind": "robust", "label_smoothing": 0.5}))
            .err()
            .unwrap();
        assert!(e.contains("[0, 0.5)"), "{e}");
    }
}
