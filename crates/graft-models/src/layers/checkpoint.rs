//! Activation checkpointing of decoder blocks: a block's forward runs without a graph (its output
//! detached, so none of its intermediates stay alive), wrapped in an op that keeps only the block's
//! input; the op's backward runs the block again with a graph — replaying the same dropout masks
//! from a snapshot of the dropout RNG — and backpropagates through it. The block's own trainable
//! tensors (full fine-tuning weights, adapter weights) are not inputs of the op, so their gradients
//! are collected on the side ([`take_side_grads`]) for the tensors declared trainable
//! ([`set_trainable`]) and added by the optimizer step (graft-train's step.rs). Memory per
//! layer drops to its input; compute grows by one extra forward.
//!
//! Shapes: x (B, T, H) → y (B, T, H).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, TensorId, Var};
use rand::rngs::StdRng;

use super::cpu_op::output_like;

thread_local! {
    static SIDE_GRADS: RefCell<HashMap<TensorId, Tensor>> = RefCell::new(HashMap::new());
    static TRAINABLE: RefCell<std::collections::HashSet<TensorId>> = RefCell::new(Default::default());
}

/// The tensors being trained (the optimizer's variables): only their gradients are kept from a
/// recomputed block — the inner backward also holds one for every intermediate.
pub fn set_trainable(vars: impl IntoIterator<Item = TensorId>) {
    TRAINABLE.with(|t| *t.borrow_mut() = vars.into_iter().collect());
}

/// Whether `id` is one of the tensors [`set_trainable`] declared (their gradients may go to the
/// side store).
pub fn is_trainable(id: TensorId) -> bool {
    TRAINABLE.with(|t| t.borrow().contains(&id))
}

/// Adds `grad` to the side-store gradient of tensor `id` (ops whose own tensors are not inputs:
/// checkpointed blocks, fused_block.rs).
pub fn add_side_grad(id: TensorId, grad: Tensor) -> Result<()> {
    SIDE_GRADS.with(|side| {
        let mut side = side.borrow_mut();
        let total = match side.remove(&id) {
            Some(prev) => (prev + grad)?,
            None => grad,
        };
        side.insert(id, total);
        Ok(())
    })
}

/// The gradients of tensors inside checkpointed blocks, summed since the last call.
pub fn take_side_grads() -> HashMap<TensorId, Tensor> {
    SIDE_GRADS.with(|g| std::mem::take(&mut *g.borrow_mut()))
}

/// Runs the block on its input with a graph.
pub type BlockFn = Arc<dyn Fn(&Tensor, Option<&Mutex<StdRng>>) -> Result<Tensor> + Send + Sync>;

struct Checkpoint {
    run: BlockFn,
    /// The dropout RNG as the block's forward found it.
    rng: Option<StdRng>,
    /// The forward's output, computed without a graph; handed to `cpu_fwd` once, not kept for the
    /// backward.
    out: Mutex<Option<Tensor>>,
}

impl CustomOp1 for Checkpoint {
    fn name(&self) -> &'static str {
        "checkpoint"
    }

    fn cpu_fwd(&self, s: &CpuStorage, _l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = self
            .out
            .lock()
            .map_err(|_| candle_core::Error::Msg("checkpoint poisoned".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("checkpoint: forward run twice".into()))?;
        let v = out
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        Ok((output_like(v, s), out.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let x = Var::from_tensor(&x.detach())?;
        let rng = self.rng.clone().map(Mutex::new);
        let y = (self.run)(x.as_tensor(), rng.as_ref())?;
        let grads = (y * grad.detach())?.sum_all()?.backward()?;
        let dx = grads.get(x.as_tensor()).cloned();
        for id in grads.get_ids() {
            if is_trainable(*id) {
                add_side_grad(*id, grads.get_id(*id).expect("listed").clone())?;
            }
        }
        Ok(dx)
    }
}

/// `run(x)` checkpointed: the output without a kept graph, differentiable in x (and, through the
/// side store, in the block's own tensors).
pub fn checkpointed(x: &Tensor, run: BlockFn, rng: Option<&Mutex<StdRng>>) -> Result<Tensor> {
    let snapshot = match rng {
        Some(r) => Some(
            r.lock()
                .map_err(|_| candle_core::Error::Msg("dropout RNG poisoned".into()))?
                .clone(),
        ),
        None => None,
    };
    let out = run(&x.detach(), rng)?.detach();
    // An untracked input (frozen embeddings under an adapter) would leave the op out of the graph
    // and its backward — the one place the block's own gradients come from — never called.
    let x = match x.track_op() {
        true => x.contiguous()?,
        false => Var::from_tensor(&x.contiguous()?)?.as_tensor().clone(),
    };
    x.apply_op1(Checkpoint {
        run,
        rng: snapshot,
        out: Mutex::new(Some(out)),
    })
}
