//! A decoding step's two products with AVX2 and FMA (checked at run time by the caller): the
//! scores of one query row against a run of cached keys, and the probability-weighted sum of the
//! cached values. At one query position these are matrix-vector products that stream the cache:
//! four keys are dotted at once (one horizontal reduction per four), and the output's columns are
//! held in registers, 64 at a time, while the values stream past.
//!
//! Shapes: q (D); keys and values rows of D, `stride` apart; scores (S); o (D).

use std::arch::x86_64::*;

use super::fused_attention::Rows;

/// Four vectors' horizontal sums as one: lane i = the sum of `v[i]`'s lanes.
#[inline(always)]
unsafe fn hsum4(v: [__m256; 4]) -> __m128 {
    let a = _mm256_hadd_ps(v[0], v[1]);
    let b = _mm256_hadd_ps(v[2], v[3]);
    let c = _mm256_hadd_ps(a, b);
    _mm_add_ps(_mm256_castps256_ps128(c), _mm256_extractf128_ps(c, 1))
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// `out[j] = scale · q · k_j` for j in lo..hi (the other entries are left as they are).
///
/// # Safety
/// AVX2 and FMA must be present; `k` must hold rows up to `hi`, each `q.len()` long.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn scores(
    q: &[f32],
    k: Rows,
    (lo, hi): (usize, usize),
    scale: f32,
    out: &mut [f32],
) {
    let d = q.len();
    let body = d - d % 8;
    let row = |j: usize| k.data[j * k.stride..j * k.stride + d].as_ptr();
    let tail = |j: usize| -> f32 {
        let kj = &k.data[j * k.stride..j * k.stride + d];
        q[body..].iter().zip(&kj[body..]).map(|(a, b)| a * b).sum()
    };
    let mut j = lo;
    while j + 4 <= hi {
        let ks = [row(j), row(j + 1), row(j + 2), row(j + 3)];
        let mut acc = [_mm256_setzero_ps(); 4];
        for c in (0..body).step_by(8) {
            let qv = _mm256_loadu_ps(q.as_ptr().add(c));
            for (a, kp) in acc.iter_mut().zip(ks) {
                *a = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kp.add(c)), *a);
            }
        }
        let mut sums = [0f32; 4];
        _mm_storeu_ps(sums.as_mut_ptr(), hsum4(acc));
        for (i, s) in sums.iter().enumerate() {
            out[j + i] = scale * (s + tail(j + i));
        }
        j += 4;
    }
    for (j, o) in out.iter_mut().enumerate().take(hi).skip(j) {
        let kp = row(j);
        let mut acc = _mm256_setzero_ps();
        for c in (0..body).step_by(8) {
            acc = _mm256_fmadd_ps(
                _mm256_loadu_ps(q.as_ptr().add(c)),
                _mm256_loadu_ps(kp.add(c)),
                acc,
            );
        }
        *o = scale * (hsum(acc) + tail(j));
    }
}

/// `o = Σ_{j in lo..hi} p[j] · v_j`.
///
/// # Safety
/// AVX2 and FMA must be present; `v` must hold rows up to `hi`, each `o.len()` long.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn weighted_sum(p: &[f32], v: Rows, (lo, hi): (usize, usize), o: &mut [f32]) {
    let d = o.len();
    let mut c0 = 0;
    // 64 columns at a time in eight registers.
    while c0 + 64 <= d {
        let mut acc = [_mm256_setzero_ps(); 8];
        for (j, &pj) in p.iter().enumerate().take(hi).skip(lo) {
            let pj = _mm256_set1_ps(pj);
            let vp = v.data[j * v.stride + c0..j * v.stride + c0 + 64].as_ptr();
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vp.add(8 * i)), *a);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(o.as_mut_ptr().add(c0 + 8 * i), *a);
        }
        c0 += 64;
    }
    // The rest, 8 columns at a time, then one.
    while c0 + 8 <= d {
        let mut acc = _mm256_setzero_ps();
        for (j, &pj) in p.iter().enumerate().take(hi).skip(lo) {
            let vp = v.data[j * v.stride + c0..j * v.stride + c0 + 8].as_ptr();
            acc = _mm256_fmadd_ps(_mm256_set1_ps(pj), _mm256_loadu_ps(vp), acc);
        }
        _mm256_storeu_ps(o.as_mut_ptr().add(c0), acc);
        c0 += 8;
    }
    for (c, oc) in o.iter_mut().enumerate().skip(c0) {
        *oc = (lo..hi).map(|j| p[j] * v.data[j * v.stride + c]).sum();
    }
}
