//! What graft's CPU custom ops (fused attention, chunked head, LoRA ops, the fused block) share:
//! reading inputs as f32 (borrowed where possible), writing an f32 result back in the input's
//! dtype, direct GEMM calls, and the vectorisable exp, sum and dot their loops use.

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

/// e^x in f32 without a libm call, so that loops over it vectorise: x = n·ln 2 + r with
/// |r| ≤ ln 2 / 2, e^r by its degree-7 Taylor polynomial (truncation < 1e-8 relative), 2ⁿ from the
/// exponent bits. Within 2 ulp of `f32::exp` on [-87, 88]; 0 below (incl. -inf).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| < 2¹¹ (Cody–Waite).
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer in f32 arithmetic.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 88.0);
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    let two_n = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        p * two_n
    }
}

/// Σ v with eight running sums (vectorisable; the order is fixed, so results are reproducible).
#[inline]
pub fn sum_f32(v: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// Σ a·b with eight running sums (vectorises; fixed order).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The polynomial exp against libm's over the softmax range, and its edges.
    #[test]
    fn exp_matches_libm() {
        let mut worst = 0f32;
        for i in 0..200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let (a, b) = (exp(x), x.exp());
            worst = worst.max((a - b).abs() / b);
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }
}
