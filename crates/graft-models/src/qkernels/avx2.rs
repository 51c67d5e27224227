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
pub(super) unsafe fn half(b: &[u8], at: usize) -> f32 {
    let bits = u16::from_le_bytes([*b.get_unchecked(at), *b.get_unchecked(at + 1)]);
    // A broadcast writes the whole register (a scalar insert would depend on its old contents).
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(bits as i16)))
}

/// Asks for the weights 1 KiB ahead of `p`. A row streams from memory once per token; without
/// the hint, a thread read 5 GB/s where a plain read loop reaches 11 (the hardware prefetcher
/// of the Xeon VMs here does not keep up with a loop that also computes).
#[inline(always)]
pub(super) unsafe fn prefetch(p: *const u8) {
    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(1024) as *const i8);
}

#[inline(always)]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// 16 bytes of nibbles → 32 bytes: the low nibbles first, then the high ones.
#[inline(always)]
pub(super) unsafe fn nibbles(p: *const u8) -> __m256i {
    let t = _mm_loadu_si128(p as *const __m128i);
    let b = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    _mm256_and_si256(b, _mm256_set1_epi8(0x0F))
}

/// 32 bits (little-endian at `p`) → 32 bytes, 0xFF where the bit is set.
#[inline(always)]
pub(super) unsafe fn bits_to_bytes(p: *const u8) -> __m256i {
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

#[inline(always)]
unsafe fn load(p: *const i8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// The four f16 values at `p` (a block's d, and its m where it has one) as f32 lanes 0–3. Loaded
/// and converted as a vector: a scalar conversion is compiled into an insert that depends on
/// whatever register it lands in (the accumulator, here), which serialised the loop.
#[inline(always)]
pub(super) unsafe fn halves(p: *const u8) -> __m128 {
    _mm_cvtph_ps(_mm_loadl_epi64(p as *const __m128i))
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

/// R activation rows against one weight row of 32-weight blocks, each block unpacked once.
/// `SIGNED`: the unpacked weights are signed (their sign moves onto the activations); `MIN`: the
/// format carries a min (lane 1 of the block's halves), times each row's activation sum. Two
/// accumulators per row take alternate blocks (consecutive multiply-adds do not wait on each
/// other); a row's result is the same whatever R it is computed in.
#[inline(always)]
unsafe fn rows32<const R: usize, const SIGNED: bool, const MIN: bool>(
    row: &[u8],
    xs: &[&[Q8Block]; R],
    bytes: usize,
    unpack: impl Fn(*const u8) -> __m256i,
) -> [f32; R] {
    let blocks = row.len() / bytes;
    if xs.iter().any(|x| x.len() < blocks) {
        return [f32::NAN; R];
    }
    let mut acc = [[_mm256_setzero_ps(); R]; 2];
    let mut extra = [0f32; R];
    let ones = _mm256_set1_epi16(1);
    // Block i's contribution to row r: (scale · integer dot, min share).
    let block = |i: usize, r: usize, dm: __m128, uq: __m256i, q: __m256i| {
        let y = xs[r].get_unchecked(i);
        let mut a = load(y.qs.as_ptr());
        if SIGNED {
            a = _mm256_sign_epi8(a, q);
        }
        let pairs = _mm256_madd_epi16(_mm256_maddubs_epi16(uq, a), ones);
        let e = if MIN { min_share(dm, y) } else { 0.0 };
        (scale(dm, y), _mm256_cvtepi32_ps(pairs), e)
    };
    let unpacked = |i: usize| {
        let p = row.as_ptr().add(i * bytes);
        prefetch(p);
        let q = unpack(p);
        (
            halves(p),
            if SIGNED { _mm256_sign_epi8(q, q) } else { q },
            q,
        )
    };
    for pair in 0..blocks / 2 {
        let (i0, i1) = (2 * pair, 2 * pair + 1);
        let ((dm0, uq0, q0), (dm1, uq1, q1)) = (unpacked(i0), unpacked(i1));
        for r in 0..R {
            let (d0, p0, e0) = block(i0, r, dm0, uq0, q0);
            let (d1, p1, e1) = block(i1, r, dm1, uq1, q1);
            acc[0][r] = _mm256_fmadd_ps(d0, p0, acc[0][r]);
            acc[1][r] = _mm256_fmadd_ps(d1, p1, acc[1][r]);
            extra[r] += e0 + e1;
        }
    }
    if blocks % 2 == 1 {
        let i = blocks - 1;
        let (dm, uq, q) = unpacked(i);
        for r in 0..R {
            let (d, p, e) = block(i, r, dm, uq, q);
            acc[0][r] = _mm256_fmadd_ps(d, p, acc[0][r]);
            extra[r] += e;
        }
    }
    std::array::from_fn(|r| hsum(_mm256_add_ps(acc[0][r], acc[1][r])) + extra[r])
}

/// The 32 weights of a block as bytes (q − 8, signed).
#[inline(always)]
pub(super) unsafe fn unpack_q4_0(b: *const u8) -> __m256i {
    _mm256_sub_epi8(nibbles(b.add(2)), _mm256_set1_epi8(8))
}

#[inline(always)]
pub(super) unsafe fn unpack_q4_1(b: *const u8) -> __m256i {
    nibbles(b.add(4))
}

/// Without its fifth bit a weight is nibble − 16: the high nibble is set (two's complement).
#[inline(always)]
pub(super) unsafe fn unpack_q5_0(b: *const u8) -> __m256i {
    let high = _mm256_andnot_si256(bits_to_bytes(b.add(2)), _mm256_set1_epi8(-16));
    _mm256_or_si256(nibbles(b.add(6)), high)
}

#[inline(always)]
pub(super) unsafe fn unpack_q5_1(b: *const u8) -> __m256i {
    let high = _mm256_and_si256(bits_to_bytes(b.add(4)), _mm256_set1_epi8(0x10));
    _mm256_or_si256(nibbles(b.add(8)), high)
}

#[inline(always)]
pub(super) unsafe fn unpack_q8_0(b: *const u8) -> __m256i {
    load(b.add(2) as *const i8)
}

macro_rules! kernels32 {
    ($one:ident, $rows:ident, $bytes:expr, $signed:expr, $min:expr, $unpack:ident) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $one(row: &[u8], x: &[Q8Block]) -> f32 {
            rows32::<1, $signed, $min>(row, &[x], $bytes, |b| $unpack(b))[0]
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $rows(row: &[u8], xs: &[&[Q8Block]; 4]) -> [f32; 4] {
            rows32::<4, $signed, $min>(row, xs, $bytes, |b| $unpack(b))
        }
    };
}

kernels32!(q4_0, q4_0_x4, 18, true, false, unpack_q4_0);
kernels32!(q4_1, q4_1_x4, 20, false, true, unpack_q4_1);
kernels32!(q5_0, q5_0_x4, 22, true, false, unpack_q5_0);
kernels32!(q5_1, q5_1_x4, 24, false, true, unpack_q5_1);
kernels32!(q8_0, q8_0_x4, 34, true, false, unpack_q8_0);

/// Each row's Σ_j min_j · (activation sum of sub-block j): the share of a Q4_K/Q5_K block's
/// mins; the block's scales go to `sc`.
#[inline(always)]
fn k4_mins<const R: usize>(scales: &[u8], ys: [&Q8KBlock; R], sc: &mut [i16; 8]) -> [i32; R] {
    let mut total = [0i32; R];
    for (j, s) in sc.iter_mut().enumerate() {
        let (scale, min) = scale_min_k4(j, scales);
        *s = scale as i16;
        for (t, y) in total.iter_mut().zip(ys) {
            *t += min as i32 * (y.bsums[2 * j] as i32 + y.bsums[2 * j + 1] as i32);
        }
    }
    total
}

/// Q4_K (`FIFTH` false) and Q5_K (`FIFTH` true, 32 bytes of fifth bits after the scales) for R
/// activation rows, each block unpacked once.
#[inline(always)]
unsafe fn k4_rows<const R: usize, const FIFTH: bool>(
    row: &[u8],
    xs: &[&[Q8KBlock]; R],
) -> [f32; R] {
    let bytes = if FIFTH { 176 } else { 144 };
    let qs_at = if FIFTH { 48 } else { 16 };
    let blocks = row.len() / bytes;
    if xs.iter().any(|x| x.len() < blocks) {
        return [f32::NAN; R];
    }
    let (mut acc, mut mins) = ([_mm256_setzero_ps(); R], [0f32; R]);
    let (low, one) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(1));
    let mut sc = [0i16; 8];
    for bi in 0..blocks {
        let b = &row[bi * bytes..(bi + 1) * bytes];
        prefetch(b.as_ptr());
        let ys: [&Q8KBlock; R] = std::array::from_fn(|r| xs[r].get_unchecked(bi));
        let dm = halves(b.as_ptr());
        let (d, dmin) = (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)));
        for (m, (t, y)) in mins
            .iter_mut()
            .zip(k4_mins(&b[4..16], ys, &mut sc).into_iter().zip(ys))
        {
            *m -= y.d * dmin * t as f32;
        }
        let hbits = if FIFTH {
            _mm256_loadu_si256(b.as_ptr().add(16) as *const __m256i)
        } else {
            _mm256_setzero_si256()
        };
        let mut sum = [_mm256_setzero_si256(); R];
        for i in 0..4 {
            let bits = _mm256_loadu_si256(b.as_ptr().add(qs_at + 32 * i) as *const __m256i);
            let mut q1 = _mm256_and_si256(bits, low);
            let mut q2 = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low);
            if FIFTH {
                let fifth = |bit: i32| {
                    let h = _mm256_srl_epi16(hbits, _mm_cvtsi32_si128(bit));
                    _mm256_slli_epi16(_mm256_and_si256(h, one), 4)
                };
                q1 = _mm256_or_si256(q1, fifth(2 * i as i32));
                q2 = _mm256_or_si256(q2, fifth(2 * i as i32 + 1));
            }
            let (s1, s2) = (
                _mm256_set1_epi16(sc[2 * i]),
                _mm256_set1_epi16(sc[2 * i + 1]),
            );
            for r in 0..R {
                let y = ys[r].qs.as_ptr();
                let p1 = _mm256_madd_epi16(s1, _mm256_maddubs_epi16(q1, load(y.add(64 * i))));
                let p2 = _mm256_madd_epi16(s2, _mm256_maddubs_epi16(q2, load(y.add(64 * i + 32))));
                sum[r] = _mm256_add_epi32(sum[r], _mm256_add_epi32(p1, p2));
            }
        }
        for r in 0..R {
            let scale = _mm256_set1_ps(ys[r].d * d);
            acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sum[r]), acc[r]);
        }
    }
    std::array::from_fn(|r| hsum(acc[r]) + mins[r])
}

/// Half `h` (128 weights) of the Q6_K block at `b`, unsigned (q, 0–63; the weight is q − 32):
/// four runs of 32, each a low nibble from ql and two high bits from qh.
#[inline(always)]
pub(super) unsafe fn q6k_half(b: *const u8, h: usize) -> [__m256i; 4] {
    let (m3, m4) = (_mm256_set1_epi8(3), _mm256_set1_epi8(0x0F));
    let ql1 = _mm256_loadu_si256(b.add(64 * h) as *const __m256i);
    let ql2 = _mm256_loadu_si256(b.add(64 * h + 32) as *const __m256i);
    let qh = _mm256_loadu_si256(b.add(128 + 32 * h) as *const __m256i);
    let top = |shift: i32| {
        let t = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(shift));
        _mm256_slli_epi16(_mm256_and_si256(t, m3), 4)
    };
    [
        _mm256_or_si256(_mm256_and_si256(ql1, m4), top(0)),
        _mm256_or_si256(_mm256_and_si256(ql2, m4), top(2)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), top(4)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql2, 4), m4), top(6)),
    ]
}

/// Q6_K for R activation rows, each block unpacked once.
#[inline(always)]
unsafe fn q6k_rows<const R: usize>(row: &[u8], xs: &[&[Q8KBlock]; R]) -> [f32; R] {
    let blocks = row.len() / 210;
    if xs.iter().any(|x| x.len() < blocks) {
        return [f32::NAN; R];
    }
    let mut acc = [_mm256_setzero_ps(); R];
    let m32 = _mm256_set1_epi8(32);
    for bi in 0..blocks {
        let b = &row[bi * 210..(bi + 1) * 210];
        prefetch(b.as_ptr());
        let ys: [&Q8KBlock; R] = std::array::from_fn(|r| xs[r].get_unchecked(bi));
        let sc = &b[192..208];
        let mut sum = [_mm256_setzero_si256(); R];
        for h in 0..2 {
            for (k, q) in q6k_half(b.as_ptr(), h).into_iter().enumerate() {
                let s = _mm256_set_m128i(
                    _mm_set1_epi16(sc[8 * h + 2 * k + 1] as i8 as i16),
                    _mm_set1_epi16(sc[8 * h + 2 * k] as i8 as i16),
                );
                for r in 0..R {
                    let a = load(ys[r].qs.as_ptr().add(128 * h + 32 * k));
                    // (q − 32)·a as q·a − 32·a: maddubs needs the unsigned operand first.
                    let pairs =
                        _mm256_sub_epi16(_mm256_maddubs_epi16(q, a), _mm256_maddubs_epi16(m32, a));
                    sum[r] = _mm256_add_epi32(sum[r], _mm256_madd_epi16(pairs, s));
                }
            }
        }
        for r in 0..R {
            let scale = _mm256_set1_ps(ys[r].d * half(b, 208));
            acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sum[r]), acc[r]);
        }
    }
    std::array::from_fn(|r| hsum(acc[r]))
}

macro_rules! kernels256 {
    ($one:ident, $rows:ident, $body:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $one(row: &[u8], x: &[Q8KBlock]) -> f32 {
            $body(row, &[x])[0]
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $rows(row: &[u8], xs: &[&[Q8KBlock]; 4]) -> [f32; 4] {
            $body(row, xs)
        }
    };
}

kernels256!(q4k, q4k_x4, k4_rows::<_, false>);
kernels256!(q5k, q5k_x4, k4_rows::<_, true>);
kernels256!(q6k, q6k_x4, q6k_rows);
kernels256!(q2k, q2k_x4, super::avx2_k23::k23_rows::<_, false>);
kernels256!(q3k, q3k_x4, super::avx2_k23::k23_rows::<_, true>);
