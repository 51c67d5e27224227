//! Decoding steps' products with the signed 32-weight formats (Q4_0, Q5_0, Q8_0) on AVX-512 VNNI (checked at run time by the
//! caller): sixteen weight rows at a time, read as GGUF stores them, against each activation row.
//! Each row's block dot product is a 256-bit `vpdpbusd` whose eight lanes are summed exactly in
//! integers (a transpose-add over eight rows), so a block ends as one integer in its row's lane;
//! the block's scales (one gather for the sixteen rows) then apply once per block, not per eight
//! lanes. Each activation row's arithmetic is the same whatever other rows share the step, so a
//! sequence decodes to the same numbers alone or in a batch.
//! Shapes: W (n, k) in 32-weight blocks; xs (m) rows of Q8 blocks; out (16, m) per group.

use std::arch::x86_64::*;

use super::avx512_gemm::block_q;
use super::formats::QFormat;
use super::q8::Q8Block;

/// Eight vectors' lane sums: lane i = the sum of `v[i]`'s eight lanes (exact: integers).
#[inline(always)]
unsafe fn sums8(v: [__m256i; 8]) -> __m256i {
    let a = [
        _mm256_hadd_epi32(v[0], v[1]),
        _mm256_hadd_epi32(v[2], v[3]),
        _mm256_hadd_epi32(v[4], v[5]),
        _mm256_hadd_epi32(v[6], v[7]),
    ];
    let b0 = _mm256_hadd_epi32(a[0], a[1]);
    let b1 = _mm256_hadd_epi32(a[2], a[3]);
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(b0, b1),
        _mm256_permute2x128_si256::<0x31>(b0, b1),
    )
}

/// Rows `first..first + 16` of W (fewer at the end: `lanes`) against activation rows `xs`:
/// `out[x * 16 + i]` = row first + i times activation row x. `sums[x][b]` is Σ qs of block b.
#[inline(always)]
unsafe fn group<const OFF: i32, const XS: usize>(
    bytes: usize,
    unpack: impl Fn(*const u8) -> __m256i,
    rows: &[&[u8]; 16],
    xs: &[&[Q8Block]],
    sums: &[&[i32]],
    out: &mut [f32],
) {
    let blocks = rows[0].len() / bytes;
    for (c, xs) in xs.chunks(XS).enumerate() {
        let mut acc = [_mm512_setzero_ps(); XS];
        for b in 0..blocks {
            // The rows stream from memory once per step and are read here block by block
            // across sixteen rows, a pattern the hardware prefetcher does not follow: ask for
            // the next group's bytes (contiguous after this group's) a share per block.
            if c == 0 {
                let next = rows[15].as_ptr().wrapping_add(rows[15].len());
                let share = (16 * rows[0].len()).div_ceil(blocks).next_multiple_of(64);
                for line in (0..share).step_by(64) {
                    let p = next.wrapping_add(b * share + line);
                    _mm_prefetch::<_MM_HINT_T1>(p as *const i8);
                }
            }
            // Each row's block scale d (the first two bytes of its block).
            let heads: [u32; 16] = std::array::from_fn(|i| {
                (rows[i].as_ptr().add(b * bytes) as *const u32).read_unaligned()
            });
            let dm = _mm512_loadu_si512(heads.as_ptr() as *const _);
            let dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm));
            let mut t = [[_mm256_setzero_si256(); 2]; XS];
            for h in 0..2 {
                let w: [__m256i; 8] =
                    std::array::from_fn(|i| unpack(rows[8 * h + i].as_ptr().add(b * bytes)));
                for (x, y) in xs.iter().enumerate() {
                    let a = _mm256_load_si256(y.get_unchecked(b).qs.as_ptr() as *const __m256i);
                    let z = _mm256_setzero_si256();
                    t[x][h] = sums8(std::array::from_fn(|i| _mm256_dpbusd_epi32(z, w[i], a)));
                }
            }
            for (x, y) in xs.iter().enumerate() {
                let y = y.get_unchecked(b);
                let mut tz = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(t[x][0]), t[x][1]);
                let s = *sums[c * XS + x].get_unchecked(b);
                tz = _mm512_add_epi32(tz, _mm512_set1_epi32(-OFF * s));
                let scale = _mm512_mul_ps(dw, _mm512_set1_ps(y.d));
                acc[x] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tz), scale, acc[x]);
            }
        }
        for (x, acc) in acc.iter().enumerate().take(xs.len()) {
            _mm512_storeu_ps(out.as_mut_ptr().add((c * XS + x) * 16), *acc);
        }
    }
}

/// [`group`] for `format` (Q4_0, Q5_0 or Q8_0).
///
/// # Safety
/// AVX-512 F, BW, VL and VNNI must be present; `out` holds 16 × xs.len() values; every row is
/// whole blocks of `format` and every activation row has as many blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn rows16(
    format: QFormat,
    rows: &[&[u8]; 16],
    xs: &[&[Q8Block]],
    sums: &[&[i32]],
    out: &mut [f32],
) {
    use QFormat::*;
    // Activation rows per pass over a group's weights (their accumulators held in registers);
    // one row alone gets a body of its own. A row's arithmetic is the same either way.
    macro_rules! run {
        ($off:expr, $f:expr) => {
            match xs.len() {
                1 => group::<$off, 1>($f.block_bytes(), |p| block_q($f, p), rows, xs, sums, out),
                _ => group::<$off, 8>($f.block_bytes(), |p| block_q($f, p), rows, xs, sums, out),
            }
        };
    }
    match format {
        Q4_0 => run!(8, Q4_0),
        Q5_0 => run!(16, Q5_0),
        Q8_0 => run!(128, Q8_0),
        _ => unreachable!("signed 32-weight formats only"),
    }
}
