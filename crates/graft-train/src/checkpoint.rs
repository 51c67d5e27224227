//! Checkpoints: `checkpoint-<step>/` holds the weights (an HF directory: config.json +
//! model.safetensors, or a PEFT adapter directory), the optimizer state, and `trainer_state.json`
//! (updates done, tokens seen, loader position, seed). Dropout masks and data order are functions of (seed, step), so no RNG state
//! needs saving. Written to a temporary directory and renamed; the oldest beyond `keep_last` go.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::TrainError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Optimizer updates done.
    pub step: usize,
    pub tokens: u64,
    pub epoch: usize,
    pub cursor: usize,
    pub seed: u64,
    /// (epoch, cursor) of every task of a mixture (empty for one task: `epoch`, `cursor`).
    #[serde(default)]
    pub tasks: Vec<(usize, usize)>,
}

impl TrainerState {
    /// Before the first step.
    pub fn fresh(seed: u64) -> Self {
        Self {
            step: 0,
            tokens: 0,
            epoch: 0,
            cursor: 0,
            seed,
            tasks: Vec::new(),
        }
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Io(format!("{}: {e}", path.display()))
}

/// `files` are (name, contents) written beside the weights (`config.json`, or a PEFT
/// `adapter_config.json`); `weights_file` names the weights (`model.safetensors` or
/// `adapter_model.safetensors`), so a checkpoint is itself an HF or PEFT directory.
#[allow(clippy::too_many_arguments)]
pub fn write(
    output: &Path,
    files: &[(&str, String)],
    weights_file: &str,
    weights: &HashMap<String, Tensor>,
    optimizer: &HashMap<String, Tensor>,
    state: &TrainerState,
    keep_last: usize,
) -> Result<PathBuf, TrainError> {
    let dir = output.join(format!("checkpoint-{}", state.step));
    let staged = graft_models::fsio::StagedDir::new(&dir).map_err(|e| io(&dir, e))?;
    let tmp = staged.path();
    for (name, contents) in files {
        std::fs::write(tmp.join(name), contents).map_err(|e| io(tmp, e))?;
    }
    candle_core::safetensors::save(weights, tmp.join(weights_file)).map_err(|e| io(tmp, e))?;
    candle_core::safetensors::save(optimizer, tmp.join("optimizer.safetensors"))
        .map_err(|e| io(tmp, e))?;
    let st = serde_json::to_string_pretty(state).map_err(|e| io(tmp, e))?;
    std::fs::write(tmp.join("trainer_state.json"), st).map_err(|e| io(tmp, e))?;
    staged.commit_replacing().map_err(|e| io(&dir, e))?;
    if keep_last > 0 {
        let all = list(output);
        for (_, old) in all.iter().take(all.len().saturating_sub(keep_last)) {
            let _ = std::fs::remove_dir_all(old);
        }
    }
    Ok(dir)
}

/// Complete checkpoints under `output`, oldest first.
pub fn list(output: &Path) -> Vec<(usize, PathBuf)> {
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(output)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path()
                .join("trainer_state.json")
                .exists()
                .then(|| (step, e.path()))
        })
        .collect();
    found.sort();
    found
}

pub struct Loaded {
    pub weights: HashMap<String, Tensor>,
    pub optimizer: HashMap<String, Tensor>,
    pub state: TrainerState,
}

pub fn read(dir: &Path) -> Result<Loaded, TrainError> {
    let dev = candle_core::Device::Cpu;
    let load = |f: &str| {
        candle_core::safetensors::load(dir.join(f), &dev).map_err(|e| io(&dir.join(f), e))
    };
    let state_path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| io(&state_path, e))?;
    Ok(Loaded {
        weights: load(if dir.join("adapter_model.safetensors").exists() {
            "adapter_model.safetensors"
        } else {
            "model.safetensors"
        })?,
        optimizer: load("optimizer.safetensors")?,
        state: serde_json::from_str(&text).map_err(|e| io(&state_path, e))?,
    })
}
