//! Each format against candle's dequantization, and each product against the dense one: exactly
//! (to f32 rounding) for f32 activations; for 8-bit activations, against the same sum computed in
//! f64 from the dequantized weights and the dequantized 8-bit activations (so only rounding
//! differs), and within the quantization error of the dense product.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::*;

const ALL: [GgmlDType; 10] = [
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q2K,
    GgmlDType::Q3K,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

/// A quantized (n, k) matrix of varied magnitudes, its bytes and its dequantized values.
fn quantized(dtype: GgmlDType, n: usize, k: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
    let dev = Device::Cpu;
    let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
    // Rows and columns of different scales, and one row of zeros.
    let rs: Vec<f32> = (0..n)
        .map(|i| {
            if i == 3 {
                0.0
            } else {
                0.05 + (i as f32 * 0.37 + seed as f32).sin().abs()
            }
        })
        .collect();
    let cs: Vec<f32> = (0..k).map(|j| 0.5 + ((j * 7 % 13) as f32) / 13.0).collect();
    let w = w
        .broadcast_mul(&Tensor::from_vec(rs, (n, 1), &dev).unwrap())
        .unwrap()
        .broadcast_mul(&Tensor::from_vec(cs, (1, k), &dev).unwrap())
        .unwrap();
    let q = QTensor::quantize(&w, dtype).unwrap();
    let bytes = q.data().unwrap().to_vec();
    let dense = q
        .dequantize(&dev)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    (bytes, dense)
}

fn activations_rows(m: usize, k: usize) -> Vec<f32> {
    (0..m * k)
        .map(|i| ((i as f32 * 0.731).sin() * 2.0) + if i % 97 == 0 { 6.0 } else { 0.0 })
        .collect()
}

#[test]
fn dequantized_rows_equal_candles() {
    for dtype in ALL {
        let f = QFormat::of(dtype).unwrap();
        let (n, k) = (5, 512);
        let (bytes, dense) = quantized(dtype, n, k, 1);
        let m = QMatrix::new(f, &bytes, n, k).unwrap();
        let mut row = vec![0f32; k];
        for i in 0..n {
            m.dequantize_row(i, &mut row);
            for (j, (a, b)) in row.iter().zip(&dense[i * k..(i + 1) * k]).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1e-3),
                    "{f:?} row {i} col {j}: {a} vs {b}"
                );
            }
        }
    }
}

/// The AVX2 dequantizers repeat the scalar ones' operations: every value, bit for bit (rows
/// of zeros included, and raw bytes of every pattern, whose scales are finite f16 values).
#[test]
fn simd_dequantization_is_bit_identical_to_scalar() {
    if !simd_available() {
        return;
    }
    for dtype in ALL {
        let f = QFormat::of(dtype).unwrap();
        let (n, k) = (5, 512);
        let (mut bytes, _) = quantized(dtype, n, k, 2);
        // Row 4: arbitrary bytes (the scales' f16 bits kept finite by clearing their exponent top).
        let row_bytes = bytes.len() / n;
        for (j, b) in bytes[4 * row_bytes..].iter_mut().enumerate() {
            *b = (j as u32).wrapping_mul(2_654_435_761).rotate_right(13) as u8 & 0xBF;
        }
        let (mut simd, mut scalar) = (vec![0f32; k], vec![0f32; k]);
        for i in 0..n {
            let row = &bytes[i * row_bytes..(i + 1) * row_bytes];
            dequantize_row(f, row, &mut simd);
            f.dequantize_row(row, &mut scalar);
            for (j, (a, b)) in simd.iter().zip(&scalar).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{f:?} row {i} col {j}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn f32_activations_equal_the_dense_product() {
    for dtype in ALL {
        let f = QFormat::of(dtype).unwrap();
        for (n, k, m) in [(37, 512, 1), (300, 256, 3), (9, 768, 5)] {
            let (bytes, dense) = quantized(dtype, n, k, 2);
            let x = activations_rows(m, k);
            let y = QMatrix::new(f, &bytes, n, k)
                .unwrap()
                .matmul(&x, m, Activations::F32);
            for r in 0..m {
                for i in 0..n {
                    let xr = &x[r * k..(r + 1) * k];
                    let want: f64 = xr
                        .iter()
                        .zip(&dense[i * k..])
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum();
                    let mag: f64 = xr
                        .iter()
                        .zip(&dense[i * k..])
                        .map(|(a, b)| (*a as f64 * *b as f64).abs())
                        .sum();
                    let got = y[r * n + i] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * mag.max(1e-6),
                        "{f:?} ({n},{k},{m}) y[{r},{i}] = {got}, dense {want}"
                    );
                }
            }
        }
    }
}

/// The 8-bit activations as the kernels see them, dequantized.
fn q8_values(f: QFormat, x: &[f32]) -> Vec<f64> {
    if f.block_len() == 32 {
        q8::quantize_q8(x)
            .iter()
            .flat_map(|b| b.qs.iter().map(move |&q| q as f64 * b.d as f64))
            .collect()
    } else {
        q8::quantize_q8k(x)
            .iter()
            .flat_map(|b| b.qs.iter().map(move |&q| q as f64 * b.d as f64))
            .collect()
    }
}

#[test]
fn q8_activations_follow_llama_cpps_numerics() {
    for dtype in ALL {
        let f = QFormat::of(dtype).unwrap();
        let shapes = [
            (37, 512, 1),
            (130, 256, 2),
            (9, 768, 4),
            (11, 512, 9),
            (33, 256, 13),
        ];
        // Decoding steps (row kernels) and prompts (the GEMM where this CPU and format have it).
        for ((n, k, m), acts) in shapes
            .into_iter()
            .flat_map(|s| [(s, Activations::Q8), (s, Activations::Q8Prompt)])
        {
            let (bytes, dense) = quantized(dtype, n, k, 3);
            let x = activations_rows(m, k);
            let y = QMatrix::new(f, &bytes, n, k).unwrap().matmul(&x, m, acts);
            let exact_path = int_kernel(f).is_none();
            for r in 0..m {
                let xr = &x[r * k..(r + 1) * k];
                let xq = q8_values(f, xr);
                for i in 0..n {
                    let w = &dense[i * k..(i + 1) * k];
                    let mag: f64 = xr
                        .iter()
                        .zip(w)
                        .map(|(a, b)| (*a as f64 * *b as f64).abs())
                        .sum();
                    let dense_y: f64 = xr.iter().zip(w).map(|(a, b)| *a as f64 * *b as f64).sum();
                    let want: f64 = if exact_path {
                        dense_y
                    } else {
                        xq.iter().zip(w).map(|(a, b)| a * *b as f64).sum()
                    };
                    let got = y[r * n + i] as f64;
                    assert!(
                        (got - want).abs() <= 2e-5 * mag.max(1e-6),
                        "{f:?} {acts:?} ({n},{k},{m}) y[{r},{i}] = {got}, want {want}"
                    );
                    // And within the 8-bit activations' error of the f32 product.
                    assert!(
                        (got - dense_y).abs() <= 0.02 * mag.max(1e-6),
                        "{f:?}: {got} vs dense {dense_y}"
                    );
                }
            }
        }
    }
}

#[test]
fn shapes_that_are_not_whole_blocks_are_errors() {
    assert!(QMatrix::new(QFormat::Q4K, &[0u8; 144], 1, 128).is_err());
    assert!(QMatrix::new(QFormat::Q4_0, &[0u8; 17], 1, 32).is_err());
    assert!(QMatrix::new(QFormat::Q4_0, &[0u8; 36], 2, 32).is_ok());
}

#[test]
fn the_scope_sets_and_restores_the_numerics() {
    assert_eq!(activations(), Activations::F32);
    {
        let _g = activations_scope(Activations::Q8);
        assert_eq!(activations(), Activations::Q8);
    }
    assert_eq!(activations(), Activations::F32);
}

/// Throughput of the decode product (m = 1) on a large matrix and on one that stays in cache:
/// `cargo test --release -p graft-models --lib qkernels::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    for dtype in [
        GgmlDType::Q8_0,
        GgmlDType::Q5_0,
        GgmlDType::Q4_1,
        GgmlDType::Q2K,
        GgmlDType::Q3K,
        GgmlDType::Q4K,
    ] {
        let f = QFormat::of(dtype).unwrap();
        for (n, reps) in [(65536usize, 20usize), (1024, 1280)] {
            let k = 1024;
            let (bytes, _) = quantized(dtype, n, k, 4);
            let m = QMatrix::new(f, &bytes, n, k).unwrap();
            let x = activations_rows(1, k);
            let t = std::time::Instant::now();
            for _ in 0..reps {
                std::hint::black_box(m.matmul(&x, 1, Activations::Q8));
            }
            let s = t.elapsed().as_secs_f64();
            let gb = (bytes.len() * reps) as f64 / 1e9;
            eprintln!(
                "{f:?} n={n}: {:.1} GB/s, {:.2} Gweights/s",
                gb / s,
                (n * k * reps) as f64 / s / 1e9
            );
        }
    }
}

/// A row's products do not depend on how many rows share them: a prompt alone and in a batch,
/// a sequence's decoding step alone and in a batch (more rows than one pass of the kernels takes).
#[test]
fn rows_do_not_depend_on_their_batch() {
    for dtype in ALL {
        let f = QFormat::of(dtype).unwrap();
        for acts in [Activations::Q8Prompt, Activations::Q8] {
            let (n, k, m) = (37, 512, 19);
            let (bytes, _) = quantized(dtype, n, k, 7);
            let w = QMatrix::new(f, &bytes, n, k).unwrap();
            let x = activations_rows(m, k);
            let all = w.matmul(&x, m, acts);
            for r in 0..m {
                let alone = w.matmul(&x[r * k..(r + 1) * k], 1, acts);
                for i in 0..n {
                    let (a, b) = (all[r * n + i], alone[i]);
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{f:?} {acts:?} y[{r},{i}]: {a} vs {b}"
                    );
                }
            }
        }
    }
}
