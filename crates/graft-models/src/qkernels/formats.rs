//! The GGUF block formats graft multiplies without dequantizing whole tensors: each block's byte
//! layout as ggml writes it, and a scalar dequantizer per format. The dequantizers are the
//! reference the SIMD kernels are tested against (and themselves against candle's), and the
//! fallback where no SIMD kernel exists.
//! Shapes: a row of `k` weights is `k / block_len` blocks of `block_bytes` bytes, back to back.

use half::f16;

/// A quantized weight format (ggml's type names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QFormat {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
}

impl QFormat {
    /// The format of a candle GGUF dtype, `None` for float and activation-only types.
    pub fn of(dtype: candle_core::quantized::GgmlDType) -> Option<Self> {
        use candle_core::quantized::GgmlDType as G;
        Some(match dtype {
            G::Q4_0 => Self::Q4_0,
            G::Q4_1 => Self::Q4_1,
            G::Q5_0 => Self::Q5_0,
            G::Q5_1 => Self::Q5_1,
            G::Q8_0 => Self::Q8_0,
            G::Q2K => Self::Q2K,
            G::Q3K => Self::Q3K,
            G::Q4K => Self::Q4K,
            G::Q5K => Self::Q5K,
            G::Q6K => Self::Q6K,
            _ => return None,
        })
    }

    /// Weights per block.
    pub fn block_len(self) -> usize {
        match self {
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 => 32,
            _ => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q2K => 84,
            Self::Q3K => 110,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }

    /// Dequantizes one block `b` (`block_bytes` long) into `y` (`block_len` long).
    pub fn dequantize_block(self, b: &[u8], y: &mut [f32]) {
        match self {
            Self::Q4_0 => q4_0(b, y),
            Self::Q4_1 => q4_1(b, y),
            Self::Q5_0 => q5_0(b, y),
            Self::Q5_1 => q5_1(b, y),
            Self::Q8_0 => q8_0(b, y),
            Self::Q2K => q2k(b, y),
            Self::Q3K => q3k(b, y),
            Self::Q4K => q4k(b, y),
            Self::Q5K => q5k(b, y),
            Self::Q6K => q6k(b, y),
        }
    }

    /// Dequantizes a row (whole blocks) into `y`.
    pub fn dequantize_row(self, row: &[u8], y: &mut [f32]) {
        let (n, bytes) = (self.block_len(), self.block_bytes());
        for (b, y) in row.chunks_exact(bytes).zip(y.chunks_exact_mut(n)) {
            self.dequantize_block(b, y);
        }
    }
}

#[inline]
pub(crate) fn half(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// d: f16, qs: 16 bytes; weight j = (low nibble of qs[j] − 8)·d, weight j+16 = (high nibble − 8)·d.
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = ((q & 0xF) as i32 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// d, m: f16, qs: 16 bytes; weight = nibble·d + m.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half(b, 0), half(b, 2));
    for (j, &q) in b[4..20].iter().enumerate() {
        y[j] = (q & 0xF) as f32 * d + m;
        y[j + 16] = (q >> 4) as f32 * d + m;
    }
}

/// The fifth bits: bit j of the little-endian u32 is weight j's.
fn fifth_bits(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// d: f16, qh: u32, qs: 16 bytes; weight = (nibble | fifth bit << 4) − 16, times d.
fn q5_0(b: &[u8], y: &mut [f32]) {
    let (d, qh) = (half(b, 0), fifth_bits(b, 2));
    for (j, &q) in b[6..22].iter().enumerate() {
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + 16)) & 1) << 4;
        y[j] = (((q & 0xF) as u32 | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((q >> 4) as u32 | h1) as i32 - 16) as f32 * d;
    }
}

/// d, m: f16, qh: u32, qs: 16 bytes; weight = (nibble | fifth bit << 4)·d + m.
fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m, qh) = (half(b, 0), half(b, 2), fifth_bits(b, 4));
    for (j, &q) in b[8..24].iter().enumerate() {
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + 16)) & 1) << 4;
        y[j] = ((q & 0xF) as u32 | h0) as f32 * d + m;
        y[j + 16] = ((q >> 4) as u32 | h1) as f32 * d + m;
    }
}

/// d: f16, qs: 32 × i8.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = q as i8 as f32 * d;
    }
}

/// scales: 16 bytes (low nibble scale, high nibble min, per 16 weights), qs: 64 bytes of 2-bit
/// weights, d, dmin: f16. Each 128-weight half reads 32 bytes of qs at four shifts.
fn q2k(b: &[u8], y: &mut [f32]) {
    let (sc, qs, d, dmin) = (&b[0..16], &b[16..80], half(b, 80), half(b, 82));
    let mut is = 0;
    for (half_i, q) in qs.chunks_exact(32).enumerate() {
        for shift in 0..4 {
            for part in 0..2 {
                let s = sc[is];
                is += 1;
                let (dl, ml) = (d * (s & 0xF) as f32, dmin * (s >> 4) as f32);
                let base = half_i * 128 + shift * 32 + part * 16;
                for l in 0..16 {
                    let v = (q[part * 16 + l] >> (2 * shift)) & 3;
                    y[base + l] = dl * v as f32 - ml;
                }
            }
        }
    }
}

/// The sixteen 6-bit signed scales of a Q3_K block, packed in 12 bytes.
pub(crate) fn q3k_scales(s: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = ((low | (high << 4)) as i32 - 32) as i8;
    }
    out
}

/// hmask: 32 bytes (third bits), qs: 64 bytes (low two bits), scales: 12 bytes (16 × 6 bits), d:
/// f16; weight = d·scale·(2 low bits − 4 if its hmask bit is clear).
fn q3k(b: &[u8], y: &mut [f32]) {
    let (hm, qs, d) = (&b[0..32], &b[32..96], half(b, 108));
    let scales = q3k_scales(&b[96..108]);
    let (mut is, mut bit) = (0, 0);
    for (half_i, q) in qs.chunks_exact(32).enumerate() {
        for shift in 0..4 {
            for part in 0..2 {
                let dl = d * scales[is] as f32;
                is += 1;
                let base = half_i * 128 + shift * 32 + part * 16;
                for l in 0..16 {
                    let i = part * 16 + l;
                    let low = ((q[i] >> (2 * shift)) & 3) as i32;
                    let high = if hm[i] & (1 << bit) != 0 { 0 } else { 4 };
                    y[base + l] = dl * (low - high) as f32;
                }
            }
            bit += 1;
        }
    }
}

/// Scale and min `j` (of 8) of a Q4_K/Q5_K block's 12 packed bytes (6 bits each).
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Sub-blocks 2i and 2i+1 of a Q4_K/Q5_K block: each one's (d·scale, dmin·min).
fn k4_pair(i: usize, d: f32, dmin: f32, s: &[u8]) -> [(f32, f32); 2] {
    [2 * i, 2 * i + 1].map(|j| {
        let (sc, m) = scale_min_k4(j, s);
        (d * sc as f32, dmin * m as f32)
    })
}

/// d, dmin: f16, scales: 12 bytes, qs: 128 bytes; per 64 weights, 32 bytes of qs: low nibbles
/// are the first 32 (scale/min 2i), high nibbles the next 32 (2i+1); weight = d·sc·q − dmin·m.
fn q4k(b: &[u8], y: &mut [f32]) {
    let (d, dmin, s, qs) = (half(b, 0), half(b, 2), &b[4..16], &b[16..144]);
    for (i, q) in qs.chunks_exact(32).enumerate() {
        let [(d1, m1), (d2, m2)] = k4_pair(i, d, dmin, s);
        for l in 0..32 {
            y[64 * i + l] = d1 * (q[l] & 0xF) as f32 - m1;
            y[64 * i + 32 + l] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

/// As Q4_K with qh: 32 bytes of fifth bits (bit 2i of qh[l] for weight l of sub-block 2i, bit
/// 2i+1 for sub-block 2i+1).
fn q5k(b: &[u8], y: &mut [f32]) {
    let (d, dmin, s) = (half(b, 0), half(b, 2), &b[4..16]);
    let (qh, qs) = (&b[16..48], &b[48..176]);
    for (i, q) in qs.chunks_exact(32).enumerate() {
        let [(d1, m1), (d2, m2)] = k4_pair(i, d, dmin, s);
        for l in 0..32 {
            let h1 = ((qh[l] >> (2 * i)) & 1) << 4;
            let h2 = ((qh[l] >> (2 * i + 1)) & 1) << 4;
            y[64 * i + l] = d1 * ((q[l] & 0xF) | h1) as f32 - m1;
            y[64 * i + 32 + l] = d2 * ((q[l] >> 4) | h2) as f32 - m2;
        }
    }
}

/// ql: 128 bytes (low nibbles), qh: 64 bytes (two high bits each), scales: 16 × i8, d: f16;
/// weight = d·scale·(q − 32). Per 128 weights: 64 bytes of ql, 32 of qh, 8 scales.
fn q6k(b: &[u8], y: &mut [f32]) {
    let (ql, qh, sc, d) = (&b[0..128], &b[128..192], &b[192..208], half(b, 208));
    for h in 0..2 {
        let (ql, qh, sc) = (&ql[64 * h..], &qh[32 * h..], &sc[8 * h..]);
        let y = &mut y[128 * h..];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}
