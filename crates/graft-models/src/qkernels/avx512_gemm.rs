//! A prompt's products with quantized weights and 8-bit activations, as a GEMM with AVX-512 VNNI
//! (checked at run time by the caller). Each task repacks sixteen weight rows into a panel, one
//! row per 32-bit lane: four consecutive weights of each row side by side, so one `vpdpbusd` with
//! four activation bytes broadcast adds four products to all sixteen rows, and a run's integer
//! dot product ends in its row's lane, with no horizontal sums. Float work (the scales) is once per
//! run or super-block, not per 32 values; the panel is reused for every activation row.
//!
//! Numerics are llama.cpp's (activations as Q8_0 blocks for the 32-weight formats, Q8_K
//! super-blocks for the k-quants, integer products within each scale's run); sums are ordered
//! differently from the row kernels, so results differ from theirs by f32 rounding. Prompts use
//! this path whatever their length, so a prompt's numbers do not depend on how many rows share
//! its product; decoding steps use the row kernels.
//!
//! Every format is written as runs of `run` weights, each weight an unsigned byte q with value
//! (q − off) × the run's integer scale (k-quants) × its group's float scale d, plus the run's min
//! times the activations' sum (formats with a min).
//! Shapes: W (n, k) as panels of 16 rows; x (m, k) packed by [`Acts`]; y (m, n).

use std::arch::x86_64::*;

use super::avx2::{bits_to_bytes, half, nibbles, q6k_half};
use super::formats::{q3k_scales, scale_min_k4, QFormat};
use super::q8::{quantize_q8, quantize_q8k};

/// Weight rows per panel: one per 32-bit lane of a 512-bit register.
pub const LANES: usize = 16;
/// Activation rows that share each load of a panel run.
const RX: usize = 4;

/// How a format's weights are laid out as runs (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Weights per run (32, or 16 for Q6_K).
    run: usize,
    /// Runs per float scale.
    group: usize,
    off: i32,
    min: bool,
}

/// The layout of `format`, if it has a GEMM here.
pub fn layout(format: QFormat) -> Option<Layout> {
    use QFormat::*;
    let l = |run, group, off, min| {
        Some(Layout {
            run,
            group,
            off,
            min,
        })
    };
    match format {
        Q4_0 => l(32, 1, 8, false),
        Q4_1 | Q5_1 => l(32, 1, 0, true),
        Q5_0 => l(32, 1, 16, false),
        Q8_0 => l(32, 1, 128, false),
        Q4K | Q5K => l(32, 8, 0, true),
        Q6K => l(16, 16, 32, false),
        Q2K => l(16, 16, 0, true),
        Q3K => l(16, 16, 4, false),
    }
}

/// Activations quantized for the GEMM, rows padded to a multiple of [`RX`] with zeros.
pub struct Acts {
    k: usize,
    /// (rows, k)
    qs: Vec<i8>,
    /// (rows, runs): each run's sum of quantized activations.
    sums: Vec<i32>,
    /// (rows, groups): each group's activation scale.
    d: Vec<f32>,
    /// (rows, runs): d × the run's sum (what a min multiplies).
    dsums: Vec<f32>,
}

impl Acts {
    pub fn new(x: &[f32], m: usize, k: usize, l: Layout) -> Self {
        use rayon::prelude::*;
        let rows = m.next_multiple_of(RX);
        let (runs, groups) = (k / l.run, k / (l.run * l.group));
        let mut a = Acts {
            k,
            qs: vec![0; rows * k],
            sums: vec![0; rows * runs],
            d: vec![0.0; rows * groups],
            dsums: vec![0.0; rows * runs],
        };
        a.qs.par_chunks_mut(k)
            .zip(a.sums.par_chunks_mut(runs))
            .zip(a.d.par_chunks_mut(groups))
            .zip(a.dsums.par_chunks_mut(runs))
            .zip(x.par_chunks(k))
            .for_each(|((((qs, sums), d), dsums), x)| match l.group {
                1 => {
                    for (b, q) in quantize_q8(x).iter().enumerate() {
                        qs[32 * b..32 * b + 32].copy_from_slice(&q.qs);
                        sums[b] = q.qs.iter().map(|&v| v as i32).sum();
                        d[b] = q.d;
                        dsums[b] = q.s;
                    }
                }
                _ => {
                    let per = 256 / l.run;
                    for (sb, q) in quantize_q8k(x).iter().enumerate() {
                        qs[256 * sb..256 * sb + 256].copy_from_slice(&q.qs);
                        d[sb] = q.d;
                        for r in 0..per {
                            let s: i32 = match l.run {
                                16 => q.bsums[r] as i32,
                                _ => q.bsums[2 * r] as i32 + q.bsums[2 * r + 1] as i32,
                            };
                            sums[sb * per + r] = s;
                            dsums[sb * per + r] = q.d * s as f32;
                        }
                    }
                }
            });
        a
    }
}

/// Sixteen weight rows repacked (see the module doc); lanes past the last row are zero.
#[derive(Default)]
pub struct Panel {
    /// (runs, run / 4, 16 lanes, 4 bytes)
    q: Vec<u8>,
    /// (runs, 16): each run's integer scale (k-quants).
    sc: Vec<i32>,
    /// (groups, 16)
    d: Vec<f32>,
    /// (runs, 16): each run's min (formats with a min; negated for the k-quants' subtracted mins).
    min: Vec<f32>,
}

impl Panel {
    fn reset(&mut self, k: usize, l: Layout) {
        let runs = k / l.run;
        fill(&mut self.q, k * LANES, 0u8);
        fill(&mut self.sc, runs * LANES, 0i32);
        fill(&mut self.d, runs / l.group * LANES, 0f32);
        fill(&mut self.min, runs * LANES, 0f32);
    }

    /// Puts `run` unsigned weights of run `rho` into `lane`, four bytes per 64-byte row of lanes.
    #[inline(always)]
    fn put(&mut self, rho: usize, run: usize, lane: usize, bytes: &[u8]) {
        let base = rho * run * LANES;
        for (g, four) in bytes.chunks_exact(4).enumerate() {
            let at = base + (g * LANES + lane) * 4;
            self.q[at..at + 4].copy_from_slice(four);
        }
    }
}

#[inline(always)]
unsafe fn store(v: __m256i) -> [u8; 32] {
    let mut out = [0u8; 32];
    _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, v);
    out
}

fn fill<T: Copy>(v: &mut Vec<T>, len: usize, zero: T) {
    v.clear();
    v.resize(len, zero);
}

/// The unsigned weights of a 32-weight block (the signed formats' offsets come off later).
#[inline(always)]
pub(super) unsafe fn block_q(format: QFormat, b: *const u8) -> __m256i {
    let fifth = |p| _mm256_and_si256(bits_to_bytes(p), _mm256_set1_epi8(0x10));
    match format {
        QFormat::Q4_0 => nibbles(b.add(2)),
        QFormat::Q4_1 => nibbles(b.add(4)),
        QFormat::Q5_0 => _mm256_or_si256(nibbles(b.add(6)), fifth(b.add(2))),
        QFormat::Q5_1 => _mm256_or_si256(nibbles(b.add(8)), fifth(b.add(4))),
        // q + 128: the byte's sign bit flipped.
        _ => _mm256_xor_si256(
            _mm256_loadu_si256(b.add(2) as *const __m256i),
            _mm256_set1_epi8(-128),
        ),
    }
}

/// Repacks `rows` (at most 16 rows of `format`, `k` weights each) into `p`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn pack(p: &mut Panel, format: QFormat, rows: &[&[u8]], k: usize, l: Layout) {
    p.reset(k, l);
    for (lane, row) in rows.iter().enumerate() {
        match format {
            QFormat::Q4K | QFormat::Q5K => pack_k4(p, format == QFormat::Q5K, row, lane),
            QFormat::Q6K => pack_q6k(p, row, lane),
            QFormat::Q2K | QFormat::Q3K => pack_k23(p, format == QFormat::Q3K, row, lane),
            _ => {
                let bytes = format.block_bytes();
                for (b, block) in row.chunks_exact(bytes).enumerate() {
                    p.put(b, 32, lane, &store(block_q(format, block.as_ptr())));
                    p.d[b * LANES + lane] = half(block, 0);
                    if l.min {
                        p.min[b * LANES + lane] = half(block, 2);
                    }
                }
            }
        }
    }
}

/// Q4_K / Q5_K: runs of 32 (a sub-block each) with 6-bit scales and mins.
#[inline(always)]
unsafe fn pack_k4(p: &mut Panel, fifth: bool, row: &[u8], lane: usize) {
    let (bytes, qs_at) = if fifth { (176, 48) } else { (144, 16) };
    let low = _mm256_set1_epi8(0x0F);
    for (sb, b) in row.chunks_exact(bytes).enumerate() {
        p.d[sb * LANES + lane] = half(b, 0);
        let dmin = half(b, 2);
        let hbits = _mm256_loadu_si256(b.as_ptr().add(16) as *const __m256i);
        let high = |bit: i32| {
            let h = _mm256_srl_epi16(hbits, _mm_cvtsi32_si128(bit));
            _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(1)), 4)
        };
        for i in 0..4 {
            let bits = _mm256_loadu_si256(b.as_ptr().add(qs_at + 32 * i) as *const __m256i);
            let mut q1 = _mm256_and_si256(bits, low);
            let mut q2 = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low);
            if fifth {
                q1 = _mm256_or_si256(q1, high(2 * i as i32));
                q2 = _mm256_or_si256(q2, high(2 * i as i32 + 1));
            }
            for (j, q) in [(2 * i, q1), (2 * i + 1, q2)] {
                let rho = sb * 8 + j;
                let (scale, min) = scale_min_k4(j, &b[4..16]);
                p.put(rho, 32, lane, &store(q));
                p.sc[rho * LANES + lane] = scale as i32;
                p.min[rho * LANES + lane] = -dmin * min as f32;
            }
        }
    }
}

/// Q6_K: runs of 16 with signed 8-bit scales, weights q − 32.
#[inline(always)]
unsafe fn pack_q6k(p: &mut Panel, row: &[u8], lane: usize) {
    for (sb, b) in row.chunks_exact(210).enumerate() {
        p.d[sb * LANES + lane] = half(b, 208);
        for h in 0..2 {
            for (kk, q) in q6k_half(b.as_ptr(), h).into_iter().enumerate() {
                let q = store(q);
                for e in 0..2 {
                    let s = 8 * h + 2 * kk + e;
                    p.put(sb * 16 + s, 16, lane, &q[16 * e..16 * e + 16]);
                    p.sc[(sb * 16 + s) * LANES + lane] = b[192 + s] as i8 as i32;
                }
            }
        }
    }
}

/// Q2_K (runs of 16: 2-bit q, 4-bit scale and min) and Q3_K (runs of 16: 3-bit q − 4, signed
/// 6-bit scale): run `is` holds the values 16·is.., its bits at shift `is / 2 % 4` of the 32
/// bytes of its half, and Q3_K's third bit at bit `is / 2` of hmask.
#[inline(always)]
unsafe fn pack_k23(p: &mut Panel, third: bool, row: &[u8], lane: usize) {
    let bytes = if third { 110 } else { 84 };
    for (sb, b) in row.chunks_exact(bytes).enumerate() {
        let (qs, scales) = if third {
            (&b[32..96], q3k_scales(&b[96..108]))
        } else {
            (&b[16..80], [0; 16])
        };
        p.d[sb * LANES + lane] = half(b, if third { 108 } else { 80 });
        let dmin = if third { 0.0 } else { half(b, 82) };
        for is in 0..16 {
            let (h, shift, part) = (is / 8, is / 2 % 4, is % 2);
            let mut q = [0u8; 16];
            for (l, q) in q.iter_mut().enumerate() {
                let i = part * 16 + l;
                *q = (qs[32 * h + i] >> (2 * shift)) & 3;
                if third && b[i] & (1 << (is / 2)) != 0 {
                    *q |= 4;
                }
            }
            let rho = sb * 16 + is;
            p.put(rho, 16, lane, &q);
            p.sc[rho * LANES + lane] = match third {
                true => scales[is] as i32,
                false => (b[is] & 0xF) as i32,
            };
            if !third {
                p.min[rho * LANES + lane] = -dmin * (b[is] >> 4) as f32;
            }
        }
    }
}

/// Activation rows `x0..x0 + RX` against the panel: each row's 16 outputs.
#[inline(always)]
unsafe fn panel_rows<const RUN: usize, const GROUP: usize, const OFF: i32, const MIN: bool>(
    p: &Panel,
    a: &Acts,
    x0: usize,
) -> [__m512; RX] {
    let k = a.k;
    let (runs, groups) = (k / RUN, k / (RUN * GROUP));
    let mut acc = [_mm512_setzero_ps(); RX];
    for g in 0..groups {
        let mut isum = [_mm512_setzero_si512(); RX];
        for j in 0..GROUP {
            let rho = g * GROUP + j;
            let wp = p.q.as_ptr().add(rho * RUN * LANES);
            let mut w = [_mm512_setzero_si512(); 8];
            for (i, w) in w.iter_mut().enumerate().take(RUN / 4) {
                *w = _mm512_loadu_si512(wp.add(64 * i) as *const _);
            }
            let sc = _mm512_loadu_si512(p.sc.as_ptr().add(rho * LANES) as *const _);
            for (x, isum) in isum.iter_mut().enumerate() {
                let r = x0 + x;
                let xp = a.qs.as_ptr().add(r * k + rho * RUN);
                let mut t = match OFF {
                    0 => _mm512_setzero_si512(),
                    _ => _mm512_set1_epi32(-OFF * *a.sums.get_unchecked(r * runs + rho)),
                };
                for (i, w) in w.iter().enumerate().take(RUN / 4) {
                    let four = (xp.add(4 * i) as *const i32).read_unaligned();
                    t = _mm512_dpbusd_epi32(t, *w, _mm512_set1_epi32(four));
                }
                *isum = match GROUP {
                    1 => t,
                    _ => _mm512_add_epi32(*isum, _mm512_mullo_epi32(t, sc)),
                };
            }
            if MIN {
                let min = _mm512_loadu_ps(p.min.as_ptr().add(rho * LANES));
                for (x, acc) in acc.iter_mut().enumerate() {
                    let s = *a.dsums.get_unchecked((x0 + x) * runs + rho);
                    *acc = _mm512_fmadd_ps(min, _mm512_set1_ps(s), *acc);
                }
            }
        }
        let dw = _mm512_loadu_ps(p.d.as_ptr().add(g * LANES));
        for (x, acc) in acc.iter_mut().enumerate() {
            let dx = _mm512_set1_ps(*a.d.get_unchecked((x0 + x) * groups + g));
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[x]), _mm512_mul_ps(dw, dx), *acc);
        }
    }
    acc
}

/// y[r, row0 + i] for every activation row r < m and panel lane i < `lanes`; y is (m, n).
///
/// # Safety
/// AVX-512 F, BW and VNNI must be present; `y` must hold (m, n) and `a` the packed activations.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub unsafe fn run_panel(
    p: &Panel,
    a: &Acts,
    l: Layout,
    (m, n): (usize, usize),
    (row0, lanes): (usize, usize),
    y: *mut f32,
) {
    let mask: __mmask16 = ((1u32 << lanes) - 1) as __mmask16;
    for x0 in (0..m).step_by(RX) {
        let acc = match (l.run, l.group, l.off, l.min) {
            (32, 1, 8, false) => panel_rows::<32, 1, 8, false>(p, a, x0),
            (32, 1, 16, false) => panel_rows::<32, 1, 16, false>(p, a, x0),
            (32, 1, 128, false) => panel_rows::<32, 1, 128, false>(p, a, x0),
            (32, 1, 0, true) => panel_rows::<32, 1, 0, true>(p, a, x0),
            (32, 8, 0, true) => panel_rows::<32, 8, 0, true>(p, a, x0),
            (16, 16, 32, false) => panel_rows::<16, 16, 32, false>(p, a, x0),
            (16, 16, 4, false) => panel_rows::<16, 16, 4, false>(p, a, x0),
            (16, 16, 0, true) => panel_rows::<16, 16, 0, true>(p, a, x0),
            _ => unreachable!("layouts come from `layout`"),
        };
        for (x, v) in acc.iter().enumerate().take(m - x0) {
            _mm512_mask_storeu_ps(y.add((x0 + x) * n + row0), mask, *v);
        }
    }
}
