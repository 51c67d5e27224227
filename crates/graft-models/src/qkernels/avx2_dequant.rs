//! Whole rows dequantized to f32 with AVX2 (checked at run time by the caller): each block's
//! bytes are unpacked as the integer kernels unpack them, widened to f32 and scaled with the same
//! operations, in the same order, as the scalar dequantizers in `formats.rs`, so the results are
//! bit-identical (tested). Used for prompts (dequantize + GEMM) and for products with f32
//! activations on a few rows.

use std::arch::x86_64::*;

use super::avx2::{
    half, q6k_half, unpack_q4_0, unpack_q4_1, unpack_q5_0, unpack_q5_1, unpack_q8_0,
};
use super::formats::{scale_min_k4, QFormat};

/// 32 signed bytes → y[0..32] = scale · q (+ add): `scale.0` for the first 16, `scale.1` for the
/// rest.
#[inline(always)]
unsafe fn store32<const ADD: bool>(y: *mut f32, q: __m256i, scale: (f32, f32), add: (f32, f32)) {
    let lo = _mm256_castsi256_si128(q);
    let hi = _mm256_extracti128_si256(q, 1);
    let parts = [
        lo,
        _mm_unpackhi_epi64(lo, lo),
        hi,
        _mm_unpackhi_epi64(hi, hi),
    ];
    for (i, p) in parts.into_iter().enumerate() {
        let (s, a) = if i < 2 {
            (scale.0, add.0)
        } else {
            (scale.1, add.1)
        };
        let v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(p));
        let mut v = _mm256_mul_ps(v, _mm256_set1_ps(s));
        if ADD {
            v = _mm256_add_ps(v, _mm256_set1_ps(a));
        }
        _mm256_storeu_ps(y.add(8 * i), v);
    }
}

/// One block of a 32-weight format; `d` and (where the format has one) `m` are f16 at 0 and 2.
#[inline(always)]
unsafe fn block32<const MIN: bool>(b: *const u8, y: *mut f32, q: __m256i) {
    let bytes = std::slice::from_raw_parts(b, 4);
    let d = half(bytes, 0);
    let m = if MIN { half(bytes, 2) } else { 0.0 };
    store32::<MIN>(y, q, (d, d), (m, m));
}

#[inline(always)]
unsafe fn q4k_block(b: &[u8], y: *mut f32) {
    let (d, dmin, s) = (half(b, 0), half(b, 2), &b[4..16]);
    let low = _mm256_set1_epi8(0x0F);
    for i in 0..4 {
        let bits = _mm256_loadu_si256(b.as_ptr().add(16 + 32 * i) as *const __m256i);
        for (h, q) in [
            _mm256_and_si256(bits, low),
            _mm256_and_si256(_mm256_srli_epi16(bits, 4), low),
        ]
        .into_iter()
        .enumerate()
        {
            let (sc, m) = scale_min_k4(2 * i + h, s);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            // The scalar form is dl·q − ml: a subtraction is the addition of the negation.
            store32::<true>(y.add(64 * i + 32 * h), q, (dl, dl), (-ml, -ml));
        }
    }
}

#[inline(always)]
unsafe fn q6k_block(b: &[u8], y: *mut f32) {
    let d = half(b, 208);
    let sc = &b[192..208];
    let m32 = _mm256_set1_epi8(32);
    for h in 0..2 {
        for (k, q) in q6k_half(b.as_ptr(), h).into_iter().enumerate() {
            let s = |j: usize| d * (sc[8 * h + 2 * k + j] as i8) as f32;
            let q = _mm256_sub_epi8(q, m32);
            store32::<false>(y.add(128 * h + 32 * k), q, (s(0), s(1)), (0.0, 0.0));
        }
    }
}

/// Dequantizes `row` (whole blocks of `format`) into `y`; false where this format has no AVX2
/// path (the caller uses the scalar one).
///
/// # Safety
/// AVX2, FMA and F16C must be present.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_row(format: QFormat, row: &[u8], y: &mut [f32]) -> bool {
    let (n, bytes) = (format.block_len(), format.block_bytes());
    let blocks = row.len() / bytes;
    if y.len() < blocks * n || matches!(format, QFormat::Q2K | QFormat::Q3K | QFormat::Q5K) {
        return false;
    }
    let out = y.as_mut_ptr();
    for i in 0..blocks {
        let (b, o) = (row.as_ptr().add(i * bytes), out.add(i * n));
        match format {
            QFormat::Q4_0 => block32::<false>(b, o, unpack_q4_0(b)),
            QFormat::Q4_1 => block32::<true>(b, o, unpack_q4_1(b)),
            QFormat::Q5_0 => block32::<false>(b, o, unpack_q5_0(b)),
            QFormat::Q5_1 => block32::<true>(b, o, unpack_q5_1(b)),
            QFormat::Q8_0 => block32::<false>(b, o, unpack_q8_0(b)),
            QFormat::Q4K => q4k_block(&row[i * bytes..(i + 1) * bytes], o),
            QFormat::Q6K => q6k_block(&row[i * bytes..(i + 1) * bytes], o),
            QFormat::Q2K | QFormat::Q3K | QFormat::Q5K => unreachable!("checked above"),
        }
    }
    true
}
