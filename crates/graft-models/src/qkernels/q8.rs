//! Activations quantized to 8 bits for the integer dot products, as llama.cpp quantizes them:
//! blocks of 32 (`Q8_0`/`Q8_1`, scale = max |x| / 127, with the block's sum for the formats that
//! carry a min) for the 32-weight formats, blocks of 256 (`Q8_K`, scale from the largest-magnitude
//! value mapped to −128, with sums per 16) for the k-quants.
//! Shapes: a row of k activations → k / 32 [`Q8Block`]s or k / 256 [`Q8KBlock`]s.

/// 32 activations ≈ d · qs; `s` = d · Σ qs (what a min-carrying format multiplies by its min).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub struct Q8Block {
    pub qs: [i8; 32],
    pub d: f32,
    pub s: f32,
}

/// 256 activations ≈ d · qs; `bsums[i]` = Σ qs[16i..16i+16].
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub struct Q8KBlock {
    pub qs: [i8; 256],
    pub bsums: [i16; 16],
    pub d: f32,
}

/// Round to nearest, ties to even, as llama.cpp's `nearest_int` (adding 1.5·2²³ leaves the integer
/// in the low mantissa bits); |v| ≤ 128 here. `f32::round` is a libm call per value.
#[inline(always)]
fn nearest(v: f32) -> f32 {
    (v + 12_582_912.0) - 12_582_912.0
}

/// `x` (a multiple of 32 long) as Q8 blocks.
pub fn quantize_q8(x: &[f32]) -> Vec<Q8Block> {
    x.chunks_exact(32)
        .map(|x| {
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut qs = [0i8; 32];
            let mut sum = 0i32;
            for (q, v) in qs.iter_mut().zip(x) {
                *q = nearest(v * id) as i8;
                sum += *q as i32;
            }
            Q8Block {
                qs,
                d,
                s: d * sum as f32,
            }
        })
        .collect()
}

/// `x` (a multiple of 256 long) as Q8_K blocks.
pub fn quantize_q8k(x: &[f32]) -> Vec<Q8KBlock> {
    x.chunks_exact(256)
        .map(|x| {
            // The value of largest magnitude, with its sign, maps to −128.
            let max = x
                .iter()
                .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
            let mut b = Q8KBlock {
                qs: [0; 256],
                bsums: [0; 16],
                d: 0.0,
            };
            if max == 0.0 {
                return b;
            }
            let iscale = -128.0 / max;
            for (q, v) in b.qs.iter_mut().zip(x) {
                *q = nearest(iscale * v).min(127.0) as i8;
            }
            for (s, q) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                *s = q.iter().map(|&v| v as i16).sum();
            }
            b.d = 1.0 / iscale;
            b
        })
        .collect()
}
