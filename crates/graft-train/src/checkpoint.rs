//! Checkpoints: `checkpoint-<step>/` holds the weights (an HF directory: config.json +
//! model.safetensors, or a PEFT adapter directory), the optimizer state, and `trainer_state.json`
//! (updates done, tokens seen, loader position, seed). Dropout masks and data order are functions of (seed, step), so no RNG state
//! needs saving. Written to a temporary directory, fsync'd and renamed; `trainer_state.json`
//! records the sha256 of every other file, so a resume verifies what it reads and falls back to
//! the newest checkpoint that verifies. The oldest beyond `keep_last` go.

use std::collections::{BTreeMap, HashMap};
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

/// `trainer_state.json`: the state, and the sha256 of each other file of the checkpoint (absent
/// in checkpoints written before graft recorded them; those are read unverified).
#[derive(Serialize, Deserialize)]
struct StateFile {
    #[serde(flatten)]
    state: TrainerState,
    #[serde(default)]
    sha256: BTreeMap<String, String>,
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
    crash_test_point(state.step);
    let mut sha256 = BTreeMap::new();
    for entry in std::fs::read_dir(tmp).map_err(|e| io(tmp, e))? {
        let path = entry.map_err(|e| io(tmp, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().to_string());
        sha256.insert(name.unwrap_or_default(), crate::manifest::sha256(&path)?);
    }
    let file = StateFile {
        state: state.clone(),
        sha256,
    };
    let st = serde_json::to_string_pretty(&file).map_err(|e| io(tmp, e))?;
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

/// Debug builds only: `GRAFT_TEST_KILL_IN_CHECKPOINT=<step>` SIGKILLs this process halfway
/// through writing that step's checkpoint (weights written, not yet committed), for the test
/// that a resume after a crash mid-write continues from a verified checkpoint.
fn crash_test_point(step: usize) {
    let hit = std::env::var("GRAFT_TEST_KILL_IN_CHECKPOINT").is_ok_and(|s| s == step.to_string());
    if cfg!(debug_assertions) && hit {
        let me = std::process::id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &me])
            .status();
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
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

/// Reads the checkpoint in `dir`, first checking every file against the sha256 its
/// `trainer_state.json` records.
pub fn read(dir: &Path) -> Result<Loaded, TrainError> {
    let dev = candle_core::Device::Cpu;
    let state_path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| io(&state_path, e))?;
    let file: StateFile = serde_json::from_str(&text).map_err(|e| io(&state_path, e))?;
    for (name, want) in &file.sha256 {
        let path = dir.join(name);
        if name.contains(['/', '\\']) || crate::manifest::sha256(&path)? != *want {
            return Err(io(&path, "does not match the sha256 in trainer_state.json"));
        }
    }
    let load = |f: &str| {
        candle_core::safetensors::load(dir.join(f), &dev).map_err(|e| io(&dir.join(f), e))
    };
    Ok(Loaded {
        weights: load(if dir.join("adapter_model.safetensors").exists() {
            "adapter_model.safetensors"
        } else {
            "model.safetensors"
        })?,
        optimizer: load("optimizer.safetensors")?,
        state: file.state,
    })
}

/// The newest checkpoint under `output` that reads and verifies, and its folder; each newer one
/// that does not is named in a warning on stderr.
pub fn latest_verified(output: &Path) -> Result<(PathBuf, Loaded), TrainError> {
    let mut failures = Vec::new();
    for (_, dir) in list(output).into_iter().rev() {
        match read(&dir) {
            Ok(loaded) => {
                for f in &failures {
                    eprintln!("warning: skipping a checkpoint that does not verify: {f}; resuming from {}", dir.display());
                }
                return Ok((dir, loaded));
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    Err(TrainError::Io(match failures.first() {
        None => format!(
            "{}: --resume: no checkpoint to resume from",
            output.display()
        ),
        Some(f) => format!(
            "{}: --resume: no checkpoint verifies (newest: {f})",
            output.display()
        ),
    }))
}
