//! What graft's CPU custom ops (fused attention, chunked head, LoRA ops) share: reading an input
//! storage as an f32 tensor, and writing an f32 result back in the input's dtype.

use candle_core::{CpuStorage, DType, Device, Layout, Result, Storage, StorageRef, Tensor};

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

/// A tensor's values as one contiguous f32 slice: borrowed from its storage when it is a
/// contiguous f32 CPU tensor (the common case in backwards: no copy), converted once otherwise.
pub enum F32Values<'a> {
    Borrowed(StorageRef<'a>, std::ops::Range<usize>),
    Owned(Vec<f32>),
}

impl std::ops::Deref for F32Values<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            F32Values::Borrowed(guard, range) => match &**guard {
                Storage::Cpu(CpuStorage::F32(v)) => &v[range.clone()],
                // `f32_values` borrows only f32 CPU storage.
                _ => &[],
            },
            F32Values::Owned(v) => v,
        }
    }
}

/// `t`'s values (row-major) as f32; see [`F32Values`].
pub fn f32_values(t: &Tensor) -> Result<F32Values<'_>> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(_)), Some((a, b))) =
            (&*storage, layout.contiguous_offsets())
        {
            return Ok(F32Values::Borrowed(storage, a..b));
        }
    }
    Ok(F32Values::Owned(
        t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
    ))
}

/// c (m×n, row-major) = scale · a·b, or c += scale · a·b with `accumulate`; a (m×k) and b (k×n)
/// given with their row and column strides, so transposes cost nothing. Single-threaded: callers
/// run independent blocks in parallel, which keeps both cores busy on small per-head products
/// where a threaded GEMM would mostly synchronise.
pub fn gemm_into(
    mnk: (usize, usize, usize),
    c: &mut [f32],
    accumulate: bool,
    a: (&[f32], usize, usize),
    b: (&[f32], usize, usize),
    scale: f32,
) {
    gemm_with(mnk, c, accumulate, a, b, scale, gemm::Parallelism::None)
}

/// [`gemm_into`] on all of candle's threads: for one large product at a time.
pub fn gemm_par(
    mnk: (usize, usize, usize),
    c: &mut [f32],
    accumulate: bool,
    a: (&[f32], usize, usize),
    b: (&[f32], usize, usize),
    scale: f32,
) {
    // candle's thread count reads /proc on every call: once is enough.
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let par = match *THREADS.get_or_init(candle_core::utils::get_num_threads) {
        1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    };
    gemm_with(mnk, c, accumulate, a, b, scale, par)
}

fn gemm_with(
    (m, n, k): (usize, usize, usize),
    c: &mut [f32],
    accumulate: bool,
    (a, a_rs, a_cs): (&[f32], usize, usize),
    (b, b_rs, b_cs): (&[f32], usize, usize),
    scale: f32,
    parallelism: gemm::Parallelism,
) {
    // The last element each operand is read at must lie inside its slice (gemm takes pointers).
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        (rows > 0 && cols > 0).then(|| (rows - 1) * rs + (cols - 1) * cs)
    };
    assert!(c.len() >= m * n, "gemm_into: output too small");
    assert!(
        last(m, k, a_rs, a_cs).is_none_or(|i| i < a.len()),
        "gemm_into: lhs too small"
    );
    assert!(
        last(k, n, b_rs, b_cs).is_none_or(|i| i < b.len()),
        "gemm_into: rhs too small"
    );
    // SAFETY: every index gemm reads or writes lies within the slices checked above, and c is
    // borrowed exclusively.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            scale,
            false,
            false,
            false,
            parallelism,
        )
    }
}
