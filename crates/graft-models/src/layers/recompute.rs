//! Activation recomputation (activation checkpointing) of decoder blocks: a block's forward runs
//! without a graph (its output detached, so none of its intermediates stay alive), wrapped in an
//! op that keeps only the block's input; the op's backward runs the block again with a graph —
//! replaying the same dropout masks from a snapshot of the dropout RNG — and backpropagates
//! through it. The block's own trainable tensors are not inputs of the op, so their gradients go
//! to the side store (side_grads.rs). Memory per layer drops to its input; compute grows by one
//! extra forward.
//!
//! Shapes: x (B, T, H) → y (B, T, H).

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, Var};
use rand::rngs::StdRng;

use super::cpu_op::output_like;
use super::side_grads::{add_side_grad, is_trainable};

/// Runs the block on its input with a graph.
pub type BlockFn = Arc<dyn Fn(&Tensor, Option<&Mutex<StdRng>>) -> Result<Tensor> + Send + Sync>;

struct Recompute {
    run: BlockFn,
    /// The dropout RNG as the block's forward found it.
    rng: Option<StdRng>,
    /// The forward's output, computed without a graph; handed to `cpu_fwd` once, not kept for the
    /// backward.
    out: Mutex<Option<Tensor>>,
}

impl CustomOp1 for Recompute {
    fn name(&self) -> &'static str {
        "recompute"
    }

    fn cpu_fwd(&self, s: &CpuStorage, _l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = self
            .out
            .lock()
            .map_err(|_| candle_core::Error::Msg("recompute poisoned".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("recompute: forward run twice".into()))?;
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

/// `run(x)` with its activations recomputed in the backward: the output without a kept graph, differentiable in x (and, through the
/// side store, in the block's own tensors).
pub fn recomputed(x: &Tensor, run: BlockFn, rng: Option<&Mutex<StdRng>>) -> Result<Tensor> {
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
    x.apply_op1(Recompute {
        run,
        rng: snapshot,
        out: Mutex::new(Some(out)),
    })
}
