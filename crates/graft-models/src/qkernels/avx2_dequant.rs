//! Whole rows dequantized to f32 with AVX2 (checked at run time by the caller): each block's
//! bytes are unpacked as the integer kernels unpack them, widened to f32 and scaled with the same
//! operations, in the same order, as the scalar dequantizers in `formats.rs`, so the results are
//! bit-identical (tested). Used for prompts (dequantize + GEMM) and for products with f32
//! activations on a few rows.

use std::arch::x86_64::*;

use super::avx2::{
    half, q6k_half, unpack_q4_0, unpack_q4_1, unpack_q5_0, unpack_q5_1, unpack_q8_0,
};
use super::formats::{q3k_scales, scale_min_k4, QFormat};

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

/// Q4_K (`FIFTH` false) and Q5_K (`FIFTH` true: 32 bytes of fifth bits before the nibbles).
#[inline(always)]
unsafe fn k4_block<const FIFTH: bool>(b: &[u8], y: *mut f32) {
    let (d, dmin, s) = (half(b, 0), half(b, 2), &b[4..16]);
    let qs_at = if FIFTH { 48 } else { 16 };
    let (low, one) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(1));
    let qh = _mm256_loadu_si256(b.as_ptr().add(16) as *const __m256i);
    // Bit `bit` of each byte of qh, as 16 or 0.
    let fifth = |bit: usize| {
        let h = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(bit as i32));
        _mm256_slli_epi16(_mm256_and_si256(h, one), 4)
    };
    for i in 0..4 {
        let bits = _mm256_loadu_si256(b.as_ptr().add(qs_at + 32 * i) as *const __m256i);
        let mut pair = [
            _mm256_and_si256(bits, low),
            _mm256_and_si256(_mm256_srli_epi16(bits, 4), low),
        ];
        if FIFTH {
            pair[0] = _mm256_or_si256(pair[0], fifth(2 * i));
            pair[1] = _mm256_or_si256(pair[1], fifth(2 * i + 1));
        }
        for (h, q) in pair.into_iter().enumerate() {
            let (sc, m) = scale_min_k4(2 * i + h, s);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            // The scalar form is dl·q − ml: a subtraction is the addition of the negation.
            store32::<true>(y.add(64 * i + 32 * h), q, (dl, dl), (-ml, -ml));
        }
    }
}

/// Q2_K: per run of 32 weights (two bits at one shift of 32 bytes), d·(scale & 15)·q −
/// dmin·(scale >> 4) per 16.
#[inline(always)]
unsafe fn q2k_block(b: &[u8], y: *mut f32) {
    let (sc, d, dmin) = (&b[0..16], half(b, 80), half(b, 82));
    let m3 = _mm256_set1_epi8(3);
    for h in 0..2 {
        let bits = _mm256_loadu_si256(b.as_ptr().add(16 + 32 * h) as *const __m256i);
        for shift in 0..4 {
            let q = _mm256_and_si256(_mm256_srl_epi16(bits, _mm_cvtsi32_si128(2 * shift)), m3);
            let is = 8 * h + 2 * shift as usize;
            let dl = |j: usize| d * (sc[j] & 0xF) as f32;
            let ml = |j: usize| -(dmin * (sc[j] >> 4) as f32);
            let at = 128 * h + 32 * shift as usize;
            store32::<true>(y.add(at), q, (dl(is), dl(is + 1)), (ml(is), ml(is + 1)));
        }
    }
}

/// Q3_K: per run of 32 weights, (two low bits | hmask bit << 2) − 4, times d·scale per 16.
#[inline(always)]
unsafe fn q3k_block(b: &[u8], y: *mut f32) {
    let (d, scales) = (half(b, 108), q3k_scales(&b[96..108]));
    let (m3, one, four) = (
        _mm256_set1_epi8(3),
        _mm256_set1_epi8(1),
        _mm256_set1_epi8(4),
    );
    let hm = _mm256_loadu_si256(b.as_ptr() as *const __m256i);
    for h in 0..2 {
        let bits = _mm256_loadu_si256(b.as_ptr().add(32 + 32 * h) as *const __m256i);
        for shift in 0..4 {
            let low = _mm256_and_si256(_mm256_srl_epi16(bits, _mm_cvtsi32_si128(2 * shift)), m3);
            let bit = _mm256_srl_epi16(hm, _mm_cvtsi32_si128(4 * h as i32 + shift));
            let u = _mm256_or_si256(low, _mm256_slli_epi16(_mm256_and_si256(bit, one), 2));
            let is = 8 * h + 2 * shift as usize;
            let dl = |j: usize| d * scales[j] as f32;
            let at = 128 * h + 32 * shift as usize;
            store32::<false>(
                y.add(at),
                _mm256_sub_epi8(u, four),
                (dl(is), dl(is + 1)),
                (0.0, 0.0),
            );
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

/// Dequantizes `row` (whole blocks of `format`) into `y`; false where `y` is too short.
///
/// # Safety
/// AVX2, FMA and F16C must be present.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_row(format: QFormat, row: &[u8], y: &mut [f32]) -> bool {
    let (n, bytes) = (format.block_len(), format.block_bytes());
    let blocks = row.len() / bytes;
    if y.len() < blocks * n {
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
            QFormat::Q2K => q2k_block(&row[i * bytes..(i + 1) * bytes], o),
            QFormat::Q3K => q3k_block(&row[i * bytes..(i + 1) * bytes], o),
            QFormat::Q4K => k4_block::<false>(&row[i * bytes..(i + 1) * bytes], o),
            QFormat::Q5K => k4_block::<true>(&row[i * bytes..(i + 1) * bytes], o),
            QFormat::Q6K => q6k_block(&row[i * bytes..(i + 1) * bytes], o),
        }
    }
    true
}
