//! Integer dot products of one quantized weight row with one row of 8-bit activations, with AVX2
//! FMA and F16C (checked at run time by the caller, so the binary stays portable). The method is
//! llama.cpp's: unpack each weight block to bytes, multiply-add byte pairs into 16-bit sums
//! (`maddubs`: unsigned × signed), widen to 32 bits with the block's integer scales, and scale the
//! block's sum in f32 by the product of the two blocks' float scales.
//! Ranges: every `maddubs` pair sum stays below 2¹⁵ (|weight| ≤ 63 after unpacking, |activation|
//! ≤ 128), so nothing saturates.

use std::arch::x86_64::*;

use super::formats::scale_min_k4;
use super::q8::{Q8Block, Q8KBlock};

/// The f16 at byte `at` of `b`, converted by F16C in registers (a call here would spill the
/// accumulators every block).
#[inline(always)]
unsafe fn half(b: &[u8], at: usize) -> f32 {
    let bits = u16::from_le_bytes([*b.get_unchecked(at), *b.get_unchecked(at + 1)]);
    // A broadcast writes the whole register (a scalar insert would depend on its old contents).
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(bits as i16)))
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// 16 bytes of nibbles → 32 bytes: the low nibbles first, then the high ones.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let t = _mm_loadu_si128(p as *const __m128i);
    let b = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    _mm256_and_si256(b, _mm256_set1_epi8(0x0F))
}

/// 32 bits (little-endian at `p`) → 32 bytes, 0xFF where the bit is set.
#[inline(always)]
unsafe fn bits_to_bytes(p: *const u8) -> __m256i {
    let x = u32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)]);
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(x as i32),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    // Byte i of each group of 8 keeps bit i only; it is all ones iff that bit was set.
    let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi64x(-1))
}

/// Σ over 32 byte pairs (unsigned a, signed b), as 8 f32 partial sums.
#[inline(always)]
unsafe fn dot_us(a: __m256i, b: __m256i) -> __m256 {
    let pairs = _mm256_maddubs_epi16(a, b);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// Σ over 32 signed byte pairs: the sign moves onto b so that a can be taken as unsigned.
#[inline(always)]
unsafe fn dot_ss(a: __m256i, b: __m256i) -> __m256 {
    dot_us(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a))
}

#[inline(always)]
unsafe fn load(p: *const i8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// The four f16 values at `p` (a block's d, and its m where it has one) as f32 lanes 0–3. Loaded
/// and converted as a vector: a scalar conversion is compiled into an insert that depends on
/// whatever register it lands in (the accumulator, here), which serialised the loop.
#[inline(always)]
unsafe fn halves(p: *const u8) -> __m128 {
    _mm_cvtph_ps(_mm_loadl_epi64(p as *const __m128i))
}

/// Σ over a row of 32-weight blocks of `bytes` bytes: `block` gives each block's (scale, integer
/// dot as f32) and a correction added once (the min's share). Two accumulators, so consecutive
/// blocks' multiply-adds do not wait on each other.
#[inline(always)]
unsafe fn sum32(
    row: &[u8],
    x: &[Q8Block],
    bytes: usize,
    block: impl Fn(*const u8, &Q8Block) -> (__m256, __m256, f32),
) -> f32 {
    let (mut a0, mut a1, mut extra) = (_mm256_setzero_ps(), _mm256_setzero_ps(), 0f32);
    let mut pairs = row.chunks_exact(2 * bytes).zip(x.chunks_exact(2));
    for (b, y) in &mut pairs {
        let (d0, q0, e0) = block(b.as_ptr(), &y[0]);
        let (d1, q1, e1) = block(b.as_ptr().add(bytes), &y[1]);
        a0 = _mm256_fmadd_ps(d0, q0, a0);
        a1 = _mm256_fmadd_ps(d1, q1, a1);
        extra += e0 + e1;
    }
    let blocks = row.len() / bytes;
    if blocks % 2 == 1 {
        let (d, q, e) = block(row.as_ptr().add((blocks - 1) * bytes), &x[blocks - 1]);
        a0 = _mm256_fmadd_ps(d, q, a0);
        extra += e;
    }
    hsum(_mm256_add_ps(a0, a1)) + extra
}

/// The block's scale d times the activations' scale, in all lanes.
#[inline(always)]
unsafe fn scale(dm: __m128, y: &Q8Block) -> __m256 {
    _mm256_broadcastss_ps(_mm_mul_ss(dm, _mm_set_ss(y.d)))
}

/// The min (lane 1 of `dm`) times the activations' sum.
#[inline(always)]
unsafe fn min_share(dm: __m128, y: &Q8Block) -> f32 {
    _mm_cvtss_f32(_mm_movehdup_ps(dm)) * y.s
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4_0(row: &[u8], x: &[Q8Block]) -> f32 {
    sum32(row, x, 18, |b, y| {
        let q = _mm256_sub_epi8(nibbles(b.add(2)), _mm256_set1_epi8(8));
        (scale(halves(b), y), dot_ss(q, load(y.qs.as_ptr())), 0.0)
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4_1(row: &[u8], x: &[Q8Block]) -> f32 {
    sum32(row, x, 20, |b, y| {
        let dm = halves(b);
        let q = nibbles(b.add(4));
        (
            scale(dm, y),
            dot_us(q, load(y.qs.as_ptr())),
            min_share(dm, y),
        )
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q5_0(row: &[u8], x: &[Q8Block]) -> f32 {
    sum32(row, x, 22, |b, y| {
        // Without its fifth bit a weight is nibble − 16: set the high nibble (two's complement).
        let high = _mm256_andnot_si256(bits_to_bytes(b.add(2)), _mm256_set1_epi8(-16));
        let q = _mm256_or_si256(nibbles(b.add(6)), high);
        (scale(halves(b), y), dot_ss(q, load(y.qs.as_ptr())), 0.0)
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q5_1(row: &[u8], x: &[Q8Block]) -> f32 {
    sum32(row, x, 24, |b, y| {
        let dm = halves(b);
        let high = _mm256_and_si256(bits_to_bytes(b.add(4)), _mm256_set1_epi8(0x10));
        let q = _mm256_or_si256(nibbles(b.add(8)), high);
        (
            scale(dm, y),
            dot_us(q, load(y.qs.as_ptr())),
            min_share(dm, y),
        )
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q8_0(row: &[u8], x: &[Q8Block]) -> f32 {
    sum32(row, x, 34, |b, y| {
        let q = load(b.add(2) as *const i8);
        (scale(halves(b), y), dot_ss(q, load(y.qs.as_ptr())), 0.0)
    })
}

/// Σ_j min_j · (activation sum of sub-block j), the part of a Q4_K/Q5_K block its mins give.
#[inline(always)]
fn k4_mins(scales: &[u8], y: &Q8KBlock, sc: &mut [i16; 8]) -> i32 {
    let mut total = 0i32;
    for (j, s) in sc.iter_mut().enumerate() {
        let (scale, min) = scale_min_k4(j, scales);
        *s = scale as i16;
        total += min as i32 * (y.bsums[2 * j] as i32 + y.bsums[2 * j + 1] as i32);
    }
    total
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4k(row: &[u8], x: &[Q8KBlock]) -> f32 {
    let (mut acc, mut mins) = (_mm256_setzero_ps(), 0f32);
    let low = _mm256_set1_epi8(0x0F);
    let mut sc = [0i16; 8];
    for (b, y) in row.chunks_exact(144).zip(x) {
        mins -= y.d * half(b, 2) * k4_mins(&b[4..16], y, &mut sc) as f32;
        let mut sum = _mm256_setzero_si256();
        for i in 0..4 {
            let bits = _mm256_loadu_si256(b.as_ptr().add(16 + 32 * i) as *const __m256i);
            let q1 = _mm256_and_si256(bits, low);
            let q2 = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low);
            let p1 = _mm256_maddubs_epi16(q1, load(y.qs.as_ptr().add(64 * i)));
            let p2 = _mm256_maddubs_epi16(q2, load(y.qs.as_ptr().add(64 * i + 32)));
            let p1 = _mm256_madd_epi16(_mm256_set1_epi16(sc[2 * i]), p1);
            let p2 = _mm256_madd_epi16(_mm256_set1_epi16(sc[2 * i + 1]), p2);
            sum = _mm256_add_epi32(sum, _mm256_add_epi32(p1, p2));
        }
        let d = _mm256_set1_ps(y.d * half(b, 0));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sum), acc);
    }
    hsum(acc) + mins
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q5k(row: &[u8], x: &[Q8KBlock]) -> f32 {
    let (mut acc, mut mins) = (_mm256_setzero_ps(), 0f32);
    let (low, one) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(1));
    let mut sc = [0i16; 8];
    for (b, y) in row.chunks_exact(176).zip(x) {
        mins -= y.d * half(b, 2) * k4_mins(&b[4..16], y, &mut sc) as f32;
        let hbits = _mm256_loadu_si256(b.as_ptr().add(16) as *const __m256i);
        let mut sum = _mm256_setzero_si256();
        for i in 0..4 {
            let bits = _mm256_loadu_si256(b.as_ptr().add(48 + 32 * i) as *const __m256i);
            let fifth = |bit: i32| {
                let h = _mm256_srl_epi16(hbits, _mm_cvtsi32_si128(bit));
                _mm256_slli_epi16(_mm256_and_si256(h, one), 4)
            };
            let q1 = _mm256_or_si256(_mm256_and_si256(bits, low), fifth(2 * i as i32));
            let q2 = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low);
            let q2 = _mm256_or_si256(q2, fifth(2 * i as i32 + 1));
            let p1 = _mm256_maddubs_epi16(q1, load(y.qs.as_ptr().add(64 * i)));
            let p2 = _mm256_maddubs_epi16(q2, load(y.qs.as_ptr().add(64 * i + 32)));
            let p1 = _mm256_madd_epi16(_mm256_set1_epi16(sc[2 * i]), p1);
            let p2 = _mm256_madd_epi16(_mm256_set1_epi16(sc[2 * i + 1]), p2);
            sum = _mm256_add_epi32(sum, _mm256_add_epi32(p1, p2));
        }
        let d = _mm256_set1_ps(y.d * half(b, 0));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sum), acc);
    }
    hsum(acc) + mins
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q6k(row: &[u8], x: &[Q8KBlock]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let (m3, m4, m32) = (
        _mm256_set1_epi8(3),
        _mm256_set1_epi8(0x0F),
        _mm256_set1_epi8(32),
    );
    for (b, y) in row.chunks_exact(210).zip(x) {
        let sc = &b[192..208];
        let mut sum = _mm256_setzero_si256();
        for h in 0..2 {
            let p = b.as_ptr();
            let ql1 = _mm256_loadu_si256(p.add(64 * h) as *const __m256i);
            let ql2 = _mm256_loadu_si256(p.add(64 * h + 32) as *const __m256i);
            let qh = _mm256_loadu_si256(p.add(128 + 32 * h) as *const __m256i);
            let top = |shift: i32| {
                let t = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(shift));
                _mm256_slli_epi16(_mm256_and_si256(t, m3), 4)
            };
            let qs = [
                _mm256_or_si256(_mm256_and_si256(ql1, m4), top(0)),
                _mm256_or_si256(_mm256_and_si256(ql2, m4), top(2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), top(4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql2, 4), m4), top(6)),
            ];
            for (k, q) in qs.into_iter().enumerate() {
                let a = load(y.qs.as_ptr().add(128 * h + 32 * k));
                // (q − 32)·a as q·a − 32·a: maddubs needs the unsigned operand first.
                let pairs =
                    _mm256_sub_epi16(_mm256_maddubs_epi16(q, a), _mm256_maddubs_epi16(m32, a));
                let s = _mm256_set_m128i(
                    _mm_set1_epi16(sc[8 * h + 2 * k + 1] as i8 as i16),
                    _mm_set1_epi16(sc[8 * h + 2 * k] as i8 as i16),
                );
                sum = _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, s));
            }
        }
        let d = _mm256_set1_ps(y.d * half(b, 208));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sum), acc);
    }
    hsum(acc)
}
