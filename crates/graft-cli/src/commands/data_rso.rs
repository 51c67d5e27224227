//! `graft data rso`: RSO's statistical rejection sampling over scored candidates, then preference
//! pairs. Input rows are lists of candidates sampled from the SFT policy (`graft generate --input
//! prompts.jsonl --samples 64`) with a reward per candidate from your reward model:
//! `{"prompt", "responses": [...], "scores": [...]}`. Output: `{"prompt", "chosen", "rejected"}`
//! rows for `dpo` or `slic` (graft-data's `rso.rs` has the algorithm).

use std::path::PathBuf;

use anyhow::{bail, Result};
use graft_data::rso::{make_pairs, rejection_sample, Pairing};
use rand::{rngs::StdRng, SeedableRng};
use serde_json::{json, Value};

use crate::io::write_atomic;

#[derive(clap::Args, Debug)]
pub struct RsoArgs {
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long)]
    pub output: PathBuf,
    /// Samples accepted per prompt (the paper's 8).
    #[arg(long, default_value_t = 8)]
    pub num_samples: usize,
    /// β of π_r ∝ π_sft·exp(r/β) (the paper's 0.5); small β keeps the best, large β samples freely.
    #[arg(long, default_value_t = 0.5)]
    pub beta: f64,
    /// `first-round` (M/2 random pairs, the paper's default) or `tournament` (M−1 pairs).
    #[arg(long, default_value = "first-round")]
    pub pairing: Pairing,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn rso(a: RsoArgs, skip: bool) -> Result<()> {
    crate::io::claim_outputs(&[&a.output], &[&a.input])?;
    if !(a.beta > 0.0 && a.beta.is_finite()) {
        bail!("--beta: must be > 0, got {}", a.beta);
    }
    if a.num_samples < 2 {
        bail!("--num-samples: at least 2 to make a pair");
    }
    let rows = super::data::read(&a.input, skip)?;
    let (mut out, mut ties, mut errors) = (Vec::new(), 0, Vec::new());
    for (i, (line, row)) in rows.iter().enumerate() {
        let at = |m: String| format!("{}:{line}: {m}", a.input.display());
        let parsed = (|| -> Result<(Vec<Value>, Vec<f64>), String> {
            let responses = row
                .get("responses")
                .and_then(Value::as_array)
                .ok_or("field `responses`: missing or not a list")?
                .clone();
            let scores = row
                .get("scores")
                .and_then(Value::as_array)
                .ok_or("field `scores`: missing or not a list (one reward per response)")?
                .iter()
                .map(|v| v.as_f64().filter(|x| x.is_finite()))
                .collect::<Option<Vec<f64>>>()
                .ok_or("field `scores`: not all finite numbers")?;
            if scores.len() != responses.len() {
                return Err(format!(
                    "fields `responses`/`scores`: {} responses but {} scores",
                    responses.len(),
                    scores.len()
                ));
            }
            if !row.contains_key("prompt") {
                return Err("field `prompt`: missing".into());
            }
            Ok((responses, scores))
        })();
        let (responses, scores) = match parsed {
            Ok(p) => p,
            Err(e) if skip => {
                errors.push(at(e));
                continue;
            }
            Err(e) => bail!(at(e)),
        };
        // Each prompt's draws depend on (seed, row), not on the rows before it.
        let mut rng =
            StdRng::seed_from_u64(a.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let accepted = rejection_sample(&scores, a.num_samples, a.beta, &mut rng);
        let (pairs, t) = make_pairs(&accepted, &scores, a.pairing, &mut rng);
        ties += t;
        for (w, l) in pairs {
            if responses[w] == responses[l] {
                ties += 1;
                continue;
            }
            out.push(
                json!({"prompt": row["prompt"], "chosen": responses[w], "rejected": responses[l],
                            "score_chosen": scores[w], "score_rejected": scores[l]}),
            );
        }
    }
    super::data::report_skipped(&errors);
    let text: String = out.iter().map(|r| r.to_string() + "\n").collect();
    write_atomic(&a.output, text.as_bytes())?;
    eprintln!(
        "{} prompts → {} pairs ({} equal-reward pairs dropped) → {}",
        rows.len() - errors.len(),
        out.len(),
        ties,
        a.output.display()
    );
    Ok(())
}
