//! NF4, the 4-bit NormalFloat of QLoRA (Dettmers et al. 2023), with bitsandbytes' semantics (0.50,
//! `quantize_4bit` / `dequantize_4bit`, blocksize 64): the weight, flattened row-major, is cut into
//! blocks of 64; each block is scaled by 1/absmax (the last, partial block divided by its
//! absmax), clamped to [−1, 1] and each value given the index of its bucket among the midpoints
//! of the 16 NF4 levels (torch.bucketize: a value on a midpoint takes the lower level); two
//! indices per byte, the first in the high nibble. Double quantization (`compress_statistics`,
//! QLoRA's "DQ"): the block absmaxes minus their mean (`offset`) are quantized again, 8-bit with
//! bitsandbytes' signed dynamic map in blocks of 256, each to its nearest level (as bitsandbytes'
//! torch backend; its native CPU kernel's binary search can land one level lower in near-ties).
//! Dequantization: level × absmax (f32).
//! 4.127 bits per weight with double quantization (4 + 8/64 + 32/(64·256)).

/// bitsandbytes' `get_4bit_type("nf4")`.
pub const NF4_LEVELS: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

pub const BLOCK: usize = 64;
const BLOCK2: usize = 256;

/// bitsandbytes' `create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)` as f32 bit
/// patterns (256 sorted levels in [−1, 1], dense near 0), copied from bitsandbytes 0.50: its
/// construction goes through torch's float32 `linspace`, whose rounding is not worth re-deriving
/// (tests/nf4.rs checks the table against bitsandbytes' own).
const DYNAMIC_MAP_BITS: [u32; 256] = [
    0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000,
    0xbf616666, 0xbf5dcccd, 0xbf5a3333, 0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333,
    0xbf44999a, 0xbf410000, 0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666,
    0xbf27cccd, 0xbf243334, 0xbf20999a, 0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a,
    0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333, 0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a,
    0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc, 0xbebf999a, 0xbeb86666, 0xbeb13333, 0xbeaa0000,
    0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999, 0xbe6f3333, 0xbe60cccd,
    0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000, 0xbddb3334,
    0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a,
    0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d,
    0xbd5b851f, 0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148,
    0xbcfeb852, 0xbce7ae15, 0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148,
    0xbc1f3b64, 0xbc160418, 0xbc0ccccd, 0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4,
    0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a, 0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d,
    0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01, 0xb9c7e283, 0xb98ce705, 0xb923d70b,
    0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94, 0xb513a3b7, 0x00000000,
    0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3, 0x38ba1f4b, 0x3923d70b,
    0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d,
    0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4,
    0x3bcfdf3b, 0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148,
    0x3c68f5c3, 0x3c8b851f, 0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148,
    0x3d166667, 0x3d21eb85, 0x3d2d70a3, 0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d,
    0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d, 0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a,
    0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7, 0x3dbe6667, 0x3dc428f7, 0x3dc9eb85, 0x3ddb3334,
    0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000, 0x3e526666, 0x3e60cccd,
    0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc, 0x3eaa0000,
    0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a,
    0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a,
    0x3f123334, 0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666,
    0x3f2f0000, 0x3f32999a, 0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333,
    0x3f4bcccd, 0x3f4f6666, 0x3f530000, 0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000,
    0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666, 0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000,
];

pub fn dynamic_map() -> Vec<f32> {
    DYNAMIC_MAP_BITS
        .iter()
        .map(|&b| f32::from_bits(b))
        .collect()
}

/// Index of `x`'s bucket among the midpoints of sorted `levels` (torch.bucketize, right=False:
/// the number of midpoints strictly below x).
fn bucket(levels: &[f32], x: f32) -> usize {
    levels
        .windows(2)
        .take_while(|w| (w[0] + w[1]) / 2.0 < x)
        .count()
}

/// Blockwise absmax scaling as bitsandbytes does it: (scaled values, absmax per block).
fn scale_blocks(x: &[f32], block: usize) -> (Vec<f32>, Vec<f32>) {
    let full = x.len() - x.len() % block;
    let mut scaled = Vec::with_capacity(x.len());
    let mut absmax = Vec::with_capacity(x.len().div_ceil(block));
    for (i, chunk) in x.chunks(block).enumerate() {
        let raw = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        // The stored scale is the block's absmax; an all-zero block divides by 1e-38 instead.
        absmax.push(raw);
        let am = raw.max(1e-38);
        if i * block < full {
            let inv = 1.0 / am;
            scaled.extend(chunk.iter().map(|v| (v * inv).clamp(-1.0, 1.0)));
        } else {
            scaled.extend(chunk.iter().map(|v| (v / am).clamp(-1.0, 1.0)));
        }
    }
    (scaled, absmax)
}

/// The block scales: f32, or double-quantized.
#[derive(Debug, Clone)]
pub enum Absmax {
    F32(Vec<f32>),
    Double {
        codes: Vec<u8>,
        absmax2: Vec<f32>,
        code: Vec<f32>,
        offset: f32,
    },
}

impl Absmax {
    /// Block `i`'s scale (as [`Self::values`] gives it, without building them all).
    #[inline]
    pub fn value(&self, i: usize) -> f32 {
        match self {
            Absmax::F32(v) => v[i],
            Absmax::Double {
                codes,
                absmax2,
                code,
                offset,
            } => code[codes[i] as usize] * absmax2[i / BLOCK2] + offset,
        }
    }

    pub fn values(&self) -> Vec<f32> {
        match self {
            Absmax::F32(v) => v.clone(),
            Absmax::Double {
                codes,
                absmax2,
                code,
                offset,
            } => codes
                .iter()
                .enumerate()
                .map(|(i, &c)| code[c as usize] * absmax2[i / BLOCK2] + offset)
                .collect(),
        }
    }
}

/// A weight (rows, cols) in NF4.
#[derive(Debug, Clone)]
pub struct Nf4Tensor {
    pub shape: (usize, usize),
    /// Two 4-bit level indices per byte, the first in the high nibble.
    pub packed: Vec<u8>,
    pub absmax: Absmax,
}

impl Nf4Tensor {
    /// Quantizes `w` (row-major, `shape`). The double-quantization offset is the absmaxes' mean,
    /// correctly rounded; bitsandbytes takes torch's float32 mean, whose vectorized summation
    /// order depends on the CPU, so its offset can differ by an ulp — which moves a rare absmax
    /// code by one step. [`Self::quantize_with_offset`] reproduces a given bitsandbytes state.
    pub fn quantize(w: &[f32], shape: (usize, usize), double_quant: bool) -> Self {
        Self::quantize_inner(w, shape, double_quant.then_some(None))
    }

    /// Double-quantized with this offset (as bitsandbytes recorded it).
    pub fn quantize_with_offset(w: &[f32], shape: (usize, usize), offset: f32) -> Self {
        Self::quantize_inner(w, shape, Some(Some(offset)))
    }

    /// `double`: None = f32 scales; Some(offset) = double quantization (offset None: the mean).
    fn quantize_inner(w: &[f32], shape: (usize, usize), double: Option<Option<f32>>) -> Self {
        assert_eq!(w.len(), shape.0 * shape.1, "nf4: data and shape disagree");
        let (scaled, absmax) = scale_blocks(w, BLOCK);
        let idx: Vec<u8> = scaled
            .iter()
            .map(|&x| bucket(&NF4_LEVELS, x) as u8)
            .collect();
        let packed = idx
            .chunks(2)
            .map(|p| (p[0] << 4) | p.get(1).copied().unwrap_or(0))
            .collect();
        let absmax = match double {
            None => Absmax::F32(absmax),
            Some(given) => {
                let offset = given.unwrap_or_else(|| {
                    (absmax.iter().map(|&v| v as f64).sum::<f64>() / absmax.len() as f64) as f32
                });
                let centred: Vec<f32> = absmax.iter().map(|v| v - offset).collect();
                let code = dynamic_map();
                let (scaled, absmax2) = scale_blocks(&centred, BLOCK2);
                let codes = scaled.iter().map(|&x| bucket(&code, x) as u8).collect();
                Absmax::Double {
                    codes,
                    absmax2,
                    code,
                    offset,
                }
            }
        };
        Self {
            shape,
            packed,
            absmax,
        }
    }

    /// The weight back in f32 (row-major).
    pub fn dequantize_vec(&self) -> Vec<f32> {
        use rayon::prelude::*;
        let n = self.shape.0 * self.shape.1;
        let absmax = self.absmax.values();
        let mut out = vec![0f32; n];
        // Blocks of BLOCK values (one scale each) in parallel, two values per packed byte (the
        // high nibble first).
        out.par_chunks_mut(BLOCK)
            .zip(absmax.par_iter())
            .enumerate()
            .for_each(|(b, (o, &scale))| {
                let bytes = &self.packed[b * BLOCK / 2..];
                for (j, v) in o.iter_mut().enumerate() {
                    let byte = bytes[j / 2];
                    let q = if j % 2 == 0 { byte >> 4 } else { byte & 0xF };
                    *v = NF4_LEVELS[q as usize] * scale;
                }
            });
        out
    }

    /// Bytes held (packed weights and block scales).
    pub fn bytes(&self) -> usize {
        self.packed.len()
            + match &self.absmax {
                Absmax::F32(v) => 4 * v.len(),
                Absmax::Double { codes, absmax2, .. } => {
                    codes.len() + 4 * absmax2.len() + 4 * 256 + 4
                }
            }
    }
}
