//! Q2_K and Q3_K integer dot products with AVX2 (checked at run time by the caller), in
//! llama.cpp's method: each 256-weight block's 2- or 3-bit weights unpacked 32 at a time to bytes,
//! multiplied with the Q8_K activations (`maddubs`), each 16-weight sub-block's sum scaled by its
//! integer scale (`madd`), and the block's sum scaled once in f32.
//! Q2_K: weight = d·(scale & 15)·q − dmin·(scale >> 4), q in 0..4, so the mins enter through the
//! activations' sums per 16. Q3_K: weight = d·scale·(u − 4) with u = the two low bits | the hmask
//! bit << 2 (0..8), so the −4 enters as 4·scale times the activations' sums per 16.
//! Ranges: a `maddubs` pair sum is at most 2·7·128, and a block's integer sum stays below 2²⁴.

use std::arch::x86_64::*;

use super::avx2::{half, hsum, prefetch};
use super::formats::q3k_scales;
use super::q8::Q8KBlock;

#[inline(always)]
unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// The sum of a vector's eight i32 lanes.
#[inline(always)]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01));
    _mm_cvtsi128_si32(s)
}

/// Σ_j w[j] · bsums[j] over a block's 16 sub-blocks (`w` as 16 i16 lanes).
#[inline(always)]
unsafe fn weighted_bsums(w: __m256i, y: &Q8KBlock) -> i32 {
    hsum_i32(_mm256_madd_epi16(w, load(y.bsums.as_ptr() as *const u8)))
}

/// Sub-blocks `is` (the first 16 bytes) and `is + 1` (the last 16) of a run of 32 weights.
#[inline(always)]
unsafe fn scale_pair(lo: i16, hi: i16) -> __m256i {
    _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo))
}

/// The integer dot of 32 unpacked weights with 32 activation bytes, each half times its scale.
#[inline(always)]
unsafe fn run_dot(q: __m256i, a: *const i8, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(q, load(a as *const u8)), s)
}

/// Q2_K (`THIRD` false; 84-byte blocks: scales 16, qs 64, d, dmin) and Q3_K (`THIRD` true;
/// 110-byte blocks: hmask 32, qs 64, scales 12, d) for R activation rows, each block unpacked
/// once.
#[inline(always)]
pub(super) unsafe fn k23_rows<const R: usize, const THIRD: bool>(
    row: &[u8],
    xs: &[&[Q8KBlock]; R],
) -> [f32; R] {
    let (bytes, qs_at) = if THIRD { (110, 32) } else { (84, 16) };
    let blocks = row.len() / bytes;
    if xs.iter().any(|x| x.len() < blocks) {
        return [f32::NAN; R];
    }
    let (mut acc, mut extra) = ([_mm256_setzero_ps(); R], [0f32; R]);
    let (m3, one) = (_mm256_set1_epi8(3), _mm256_set1_epi8(1));
    for bi in 0..blocks {
        let b = &row[bi * bytes..(bi + 1) * bytes];
        prefetch(b.as_ptr());
        let ys: [&Q8KBlock; R] = std::array::from_fn(|r| xs[r].get_unchecked(bi));
        // The block's scale, its 16 sub-block scales, and what the activations' sums per 16 are
        // weighted by (Q2_K: the mins, times dmin; Q3_K: the scales, times 4·d for the −4).
        let (d, sc, weights, factor) = if THIRD {
            let d = half(b, 108);
            let s = q3k_scales(&b[96..108]);
            let w = _mm256_cvtepi8_epi16(_mm_loadu_si128(s.as_ptr() as *const __m128i));
            (d, s.map(i16::from), w, 4.0 * d)
        } else {
            let sc = &b[0..16];
            let raw = _mm_loadu_si128(sc.as_ptr() as *const __m128i);
            let mins = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(15));
            let s: [i16; 16] = std::array::from_fn(|j| (sc[j] & 15) as i16);
            (half(b, 80), s, _mm256_cvtepu8_epi16(mins), half(b, 82))
        };
        for (e, y) in extra.iter_mut().zip(ys) {
            *e -= y.d * factor * weighted_bsums(weights, y) as f32;
        }
        let hm = if THIRD {
            load(b.as_ptr())
        } else {
            _mm256_setzero_si256()
        };
        let mut sum = [_mm256_setzero_si256(); R];
        for h in 0..2 {
            let bits = load(b.as_ptr().add(qs_at + 32 * h));
            for shift in 0..4 {
                let mut q =
                    _mm256_and_si256(_mm256_srl_epi16(bits, _mm_cvtsi32_si128(2 * shift)), m3);
                if THIRD {
                    let at = _mm_cvtsi32_si128(4 * h as i32 + shift);
                    let bit = _mm256_and_si256(_mm256_srl_epi16(hm, at), one);
                    q = _mm256_or_si256(q, _mm256_slli_epi16(bit, 2));
                }
                let is = 8 * h + 2 * shift as usize;
                let s = scale_pair(sc[is], sc[is + 1]);
                for r in 0..R {
                    let a = ys[r].qs.as_ptr().add(128 * h + 32 * shift as usize);
                    sum[r] = _mm256_add_epi32(sum[r], run_dot(q, a, s));
                }
            }
        }
        for r in 0..R {
            let scale = _mm256_set1_ps(ys[r].d * d);
            acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sum[r]), acc[r]);
        }
    }
    std::array::from_fn(|r| hsum(acc[r]) + extra[r])
}
