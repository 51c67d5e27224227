//! The gradient side store: gradients of tensors that are not inputs of the op that uses them.
//! A recomputed block (recompute.rs) and the fused decoder block (fused_block.rs) hold their own
//! weights (full fine-tuning weights, adapter weights) inside the op, so candle's graph never
//! sees them; their backward adds those tensors' gradients here, for the tensors the optimizer
//! step declared trainable ([`set_trainable`]), and the step adds them in (graft-train's step.rs).

use std::cell::RefCell;
use std::collections::HashMap;

use candle_core::{Result, Tensor, TensorId};

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

/// Whether a training step declared any tensor (outside one, gradients go through candle's
/// backward as usual).
pub fn any_trainable() -> bool {
    TRAINABLE.with(|t| !t.borrow().is_empty())
}

/// Adds `grad` to the side-store gradient of tensor `id` (ops whose own tensors are not inputs:
/// recompute.rs, fused_block.rs).
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

/// The side-store gradients (recomputed and fused blocks), summed since the last call.
pub fn take_side_grads() -> HashMap<TensorId, Tensor> {
    SIDE_GRADS.with(|g| std::mem::take(&mut *g.borrow_mut()))
}
