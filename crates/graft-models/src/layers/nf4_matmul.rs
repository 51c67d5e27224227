//! NF4 products with a few activation rows (decoding from a QLoRA model) without dequantizing the
//! whole weight: each thread takes a run of weight rows, dequantizes each row's values as
//! [`Nf4Tensor::dequantize_vec`] does (level × block scale, the same f32 operations) and dots
//! them with every activation row, so the result equals dequantize-then-f32 to rounding. Rows
//! made of whole blocks take an AVX2 path (chosen at run time) that looks the levels up eight at
//! a time in registers; any other shape takes the scalar one.
//! Shapes: W (n, k) in NF4, flattened row-major into blocks of 64; x (m, k); y = x Wᵀ (m, n).

use rayon::prelude::*;

use super::nf4::{Nf4Tensor, BLOCK, NF4_LEVELS};

impl Nf4Tensor {
    /// Value `e` of the flattened weight: its level times its block's scale.
    fn value(&self, e: usize) -> f32 {
        let byte = self.packed[e / 2];
        let q = if e.is_multiple_of(2) {
            byte >> 4
        } else {
            byte & 0xF
        };
        NF4_LEVELS[q as usize] * self.absmax.value(e / BLOCK)
    }

    /// Row `i` of the weight in f32 (`cols` long).
    pub fn dequantize_row(&self, i: usize, out: &mut [f32]) {
        let k = self.shape.1;
        for (j, o) in out[..k].iter_mut().enumerate() {
            *o = self.value(i * k + j);
        }
    }

    /// y (m × rows) = x (m × cols) Wᵀ.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (n, k) = self.shape;
        assert_eq!(x.len(), m * k, "nf4 matmul: x is not (m, {k})");
        let per_task = (n / (rayon::current_num_threads() * 8)).clamp(8, 256);
        let mut yt = vec![0f32; n * m];
        yt.par_chunks_mut(per_task * m)
            .enumerate()
            .for_each(|(t, out)| {
                let mut buf = vec![0f32; k];
                for (j, o) in out.chunks_exact_mut(m).enumerate() {
                    self.row_products(t * per_task + j, x, &mut buf, o);
                }
            });
        let mut y = vec![0f32; m * n];
        for (i, row) in yt.chunks_exact(m).enumerate() {
            for (r, v) in row.iter().enumerate() {
                y[r * n + i] = *v;
            }
        }
        y
    }

    /// o[r] = weight row `i` · activation row r.
    fn row_products(&self, i: usize, x: &[f32], buf: &mut [f32], o: &mut [f32]) {
        let k = self.shape.1;
        #[cfg(target_arch = "x86_64")]
        if k.is_multiple_of(BLOCK) && crate::qkernels::simd_available() {
            // SAFETY: AVX2, FMA and F16C were detected at run time; the row is whole blocks.
            unsafe { dequantize_row_avx2(self, i, buf) };
        } else {
            self.dequantize_row(i, buf);
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.dequantize_row(i, buf);
        for (o, xr) in o.iter_mut().zip(x.chunks_exact(k)) {
            *o = super::cpu_op::dot(xr, buf);
        }
    }
}

/// [`Nf4Tensor::dequantize_row`] for a row of whole blocks: 16 nibbles → 16 levels by two
/// in-register lookups of eight (the index's bit 3 picks the table), times the block's scale.
///
/// # Safety
/// AVX2 must be present and the row must be whole blocks of 64.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_row_avx2(w: &Nf4Tensor, i: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let k = w.shape.1;
    let low_levels = _mm256_loadu_ps(NF4_LEVELS.as_ptr());
    let high_levels = _mm256_loadu_ps(NF4_LEVELS.as_ptr().add(8));
    let first_block = i * k / BLOCK;
    for (b, o) in out[..k].chunks_exact_mut(BLOCK).enumerate() {
        let scale = _mm256_set1_ps(w.absmax.value(first_block + b));
        let bytes = &w.packed[(first_block + b) * BLOCK / 2..(first_block + b + 1) * BLOCK / 2];
        for (c, o) in bytes.chunks_exact(8).zip(o.chunks_exact_mut(16)) {
            let raw = _mm_loadl_epi64(c.as_ptr() as *const __m128i);
            // Each byte holds two values, the first in its high nibble: interleave them.
            let high = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0x0F));
            let low = _mm_and_si128(raw, _mm_set1_epi8(0x0F));
            let idx = _mm_unpacklo_epi8(high, low);
            for (h, o) in o.chunks_exact_mut(8).enumerate() {
                let part = if h == 0 {
                    idx
                } else {
                    _mm_unpackhi_epi64(idx, idx)
                };
                let q = _mm256_cvtepu8_epi32(part);
                let lo = _mm256_permutevar8x32_ps(low_levels, q);
                let hi = _mm256_permutevar8x32_ps(high_levels, q);
                // Bit 3 of the index moved to the sign bit picks the upper table.
                let pick = _mm256_castsi256_ps(_mm256_slli_epi32(q, 28));
                let v = _mm256_mul_ps(_mm256_blendv_ps(lo, hi, pick), scale);
                _mm256_storeu_ps(o.as_mut_ptr(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of whole blocks (the AVX2 path) and rows that straddle blocks (the scalar one), with
    /// and without double quantization: every value as dequantize_vec gives it, and each product
    /// as the dense one to f32 rounding.
    #[test]
    fn rows_and_products_equal_the_dequantized_weight() {
        for (n, k, m) in [
            (9usize, 128usize, 1usize),
            (5, 192, 3),
            (7, 100, 2),
            (3, 64, 4),
        ] {
            let w: Vec<f32> = (0..n * k)
                .map(|i| (i as f32 * 0.37).sin() * (1.0 + (i / 64) as f32 * 0.1))
                .collect();
            for double in [false, true] {
                let q = Nf4Tensor::quantize(&w, (n, k), double);
                let dense = q.dequantize_vec();
                let mut row = vec![0f32; k];
                for i in 0..n {
                    q.dequantize_row(i, &mut row);
                    assert_eq!(row, dense[i * k..(i + 1) * k], "scalar row {i} ({n}, {k})");
                }
                let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.11).cos()).collect();
                let y = q.matmul(&x, m);
                for r in 0..m {
                    for i in 0..n {
                        let pairs = x[r * k..(r + 1) * k].iter().zip(&dense[i * k..]);
                        let want: f64 = pairs.clone().map(|(a, b)| *a as f64 * *b as f64).sum();
                        let mag: f64 = pairs.map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
                        let got = y[r * n + i] as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * mag.max(1e-6),
                            "({n}, {k}) y[{r},{i}] = {got}, dense {want}"
                        );
                    }
                }
            }
        }
    }

    /// Through the linear op: few rows take the row products, many the dense GEMM; both equal
    /// x · dequantized Wᵀ.
    #[test]
    fn the_linear_op_equals_the_dense_product() -> candle_core::Result<()> {
        use crate::layers::quant::{quant_matmul, QuantWeight};
        use candle_core::{Device, Tensor};
        let (n, k) = (6usize, 128usize);
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.29).sin()).collect();
        let q = std::sync::Arc::new(QuantWeight::Nf4(Nf4Tensor::quantize(&w, (n, k), true)));
        let dense = q.dequantize(&Device::Cpu)?;
        for m in [1usize, 3, 9] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
            let diff = (quant_matmul(&x, &q)? - x.matmul(&dense.t()?)?)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(diff < 1e-4, "{m} rows: {diff}");
        }
        Ok(())
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_simd_rows_are_bit_identical() {
        if !crate::qkernels::simd_available() {
            return;
        }
        let (n, k) = (4usize, 256usize);
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.73).cos() * 3.0).collect();
        for double in [false, true] {
            let q = Nf4Tensor::quantize(&w, (n, k), double);
            let (mut simd, mut scalar) = (vec![0f32; k], vec![0f32; k]);
            for i in 0..n {
                // SAFETY: detected above; 256 is whole blocks.
                unsafe { dequantize_row_avx2(&q, i, &mut simd) };
                q.dequantize_row(i, &mut scalar);
                assert_eq!(simd, scalar, "row {i}");
            }
        }
    }
}
