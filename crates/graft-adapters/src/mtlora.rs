//! MTLoRA (Agiza et al. 2024, "MTLoRA: Low-Rank Adaptation Approach for Efficient Multi-Task
//! Learning", CVPR; the authors' `MTLoRALinear`): a task-agnostic low-rank update shared by every
//! task (TA-LoRA) on every adapted layer, and, on a few layers, one task-specific update per task
//! (TS-LoRA) selected by each row's task. For a decoder's single stream a row of task t gets
//!
//!   y = W x + s·B A drop(x) + s·B_t A_t x      (the second term only on TS layers)
//!
//! — the authors' `matrixv2` sum (their default `matrix` mode keeps per-task streams apart, which
//! only a multi-head vision decoder has). Placement follows theirs: TA on every target module;
//! TS on the output and MLP projections (their proj / fc1 / fc2: o_proj, gate_proj, up_proj,
//! down_proj) of the last layer of each quarter of the stack (their last block of each of four
//! stages). Init: A ~ U(±1/√in), B = 0, for both. Their released configs: shared r = 64, task
//! r = 4, one absolute scale for both (here the shared α/r).
//!
//! Tasks are the recipe's `[[data.tasks]]` in order; each batch row carries its task id, which the
//! trainer publishes (thread-local) before each forward ([`set_row_tasks`]); rows without a task
//! (inference without one) get only the shared update.
//! Keys: shared as LoRA; task t's `…lora_A.<task name>.weight`, `…lora_B.<task name>.weight`.

use std::cell::RefCell;
use std::sync::Mutex;

use candle_core::{Result, Tensor};
use graft_models::layers::linear::{matmul_t, Linear, LinearAdapter};
use rand::rngs::StdRng;

thread_local! {
    static ROW_TASKS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// The task id of each row of the next forwards on this thread (`u32::MAX`: none).
pub fn set_row_tasks(tasks: &[u32]) {
    ROW_TASKS.with(|t| *t.borrow_mut() = tasks.to_vec());
}

fn row_tasks() -> Vec<u32> {
    ROW_TASKS.with(|t| t.borrow().clone())
}

/// The modules that get task-specific updates, and the default task layers: the last layer of
/// each quarter of `layers`.
pub const TASK_MODULES: [&str; 4] = ["o_proj", "gate_proj", "up_proj", "down_proj"];

pub fn default_task_layers(layers: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (1..=4)
        .map(|q| (q * layers).div_ceil(4).max(1) - 1)
        .collect();
    v.dedup();
    v
}

/// Whether module `name` (e.g. `model.layers.3.mlp.up_proj`) gets task-specific updates.
pub fn is_task_module(name: &str, task_layers: &[usize]) -> bool {
    let layer = name
        .split(".layers.")
        .nth(1)
        .and_then(|rest| rest.split('.').next())
        .and_then(|i| i.parse::<usize>().ok());
    layer.is_some_and(|l| task_layers.contains(&l))
        && TASK_MODULES
            .iter()
            .any(|m| name.ends_with(&format!(".{m}")))
}

pub fn key_task_a(module: &str, task: &str) -> String {
    format!(
        "{}{module}.lora_A.{task}.weight",
        crate::peft_format::PREFIX
    )
}

pub fn key_task_b(module: &str, task: &str) -> String {
    format!(
        "{}{module}.lora_B.{task}.weight",
        crate::peft_format::PREFIX
    )
}

#[derive(Debug)]
pub struct MtLora {
    pub shared: crate::lora::Lora,
    /// (A_t, B_t) per task, in task order; empty on layers without task-specific updates.
    pub tasks: Vec<(Tensor, Tensor)>,
}

impl LinearAdapter for MtLora {
    fn forward(&self, x: &Tensor, base: &Linear, rng: Option<&Mutex<StdRng>>) -> Result<Tensor> {
        let mut y = self.shared.forward(x, base, rng)?;
        if self.tasks.is_empty() {
            return Ok(y);
        }
        let ids = row_tasks();
        let rows = x.dim(0)?;
        if ids.len() != rows {
            return Ok(y);
        }
        for (t, (a, b)) in self.tasks.iter().enumerate() {
            let mask: Vec<f32> = ids
                .iter()
                .map(|&i| (i as usize == t) as u8 as f32)
                .collect();
            if !mask.contains(&1.0) {
                continue;
            }
            let mut shape = vec![rows];
            shape.extend(std::iter::repeat_n(1, x.rank() - 1));
            let mask = Tensor::from_vec(mask, shape, x.device())?.to_dtype(x.dtype())?;
            let delta = (matmul_t(&matmul_t(x, a)?, b)? * self.shared.scale)?;
            y = (y + delta.broadcast_mul(&mask)?)?;
        }
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_layers_and_modules() {
        assert_eq!(default_task_layers(12), vec![2, 5, 8, 11]);
        assert_eq!(default_task_layers(3), vec![0, 1, 2]);
        assert_eq!(default_task_layers(1), vec![0]);
        assert!(is_task_module("model.layers.11.mlp.down_proj", &[11]));
        assert!(!is_task_module("model.layers.11.self_attn.q_proj", &[11]));
        assert!(!is_task_module("model.layers.1.mlp.down_proj", &[11]));
    }
}
