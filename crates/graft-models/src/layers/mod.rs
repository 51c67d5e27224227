//! Building blocks shared by the model families. All of them are composed of differentiable candle
//! ops (no fused op that detaches, see DESIGN.md "candle landmines").

pub mod attention;
#[cfg(target_arch = "x86_64")]
mod attention_step_avx2;
pub mod cpu_op;
pub mod frozen;
pub mod fused_attention;
pub mod fused_block;
pub mod fused_linear;
pub mod fused_norm;
pub mod fused_swiglu;
pub mod head_logprobs;
pub mod kv_cache;
pub mod linear;
pub mod mlp;
pub mod nf4;
mod nf4_matmul;
pub mod norm;
pub mod quant;
pub mod recompute;
pub mod relative_attention;
pub mod rope;
pub mod side_grads;
