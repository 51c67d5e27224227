//! What graft's CPU custom ops (fused attention, chunked head, LoRA ops) share: reading an input
//! storage as an f32 tensor, and writing an f32 result back in the input's dtype.

use candle_core::{CpuStorage, DType, Device, Layout, Result, Tensor};

/// The contiguous f32 or bf16 input `s` as an f32 tensor; `op` names the op in the error.
pub fn input_f32(op: &str, s: &CpuStorage, l: &Layout) -> Result<Tensor> {
    let dims = l.shape().dims().to_vec();
    let t = match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Tensor::from_slice(&v[a..b], dims, &Device::Cpu)?,
        (CpuStorage::BF16(v), Some((a, b))) => Tensor::from_slice(&v[a..b], dims, &Device::Cpu)?,
        _ => candle_core::bail!("{op}: needs contiguous f32 or bf16 inputs"),
    };
    t.to_dtype(DType::F32)
}

/// `v` as storage of `like`'s dtype (bf16 stays bf16, anything else f32).
pub fn output_like(v: Vec<f32>, like: &CpuStorage) -> CpuStorage {
    match like {
        CpuStorage::BF16(_) => CpuStorage::BF16(v.into_iter().map(half::bf16::from_f32).collect()),
        _ => CpuStorage::F32(v),
    }
}
