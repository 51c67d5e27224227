//! `x Wᵀ` for a frozen weight: the backward computes only the input gradient. candle's matmul
//! backward always computes the weight gradient as well (an (in, out) product per layer per step),
//! which LoRA/QLoRA training then throws away; this op skips it.
//! Shapes: x (m, in); W (out, in); y (m, out); ∂x = ∂y W.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::cpu_op::dot;

#[derive(Debug, Clone, Copy)]
pub struct FrozenMatmul;

/// Up to this many rows (decoding: one token per sequence) the product is a matrix-vector one,
/// bound by reading W once: each thread takes a block of W's rows and dots them with every x row
/// (a GEMM library packs W first, reading it twice).
const GEMV_ROWS: usize = 4;

/// y (m × n) = x (m × k) Wᵀ for W (n × k), W's rows split across threads.
fn gemv(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    use rayon::prelude::*;
    const ROWS: usize = 64;
    let cols: Vec<Vec<f32>> = w
        .par_chunks(ROWS * k)
        .map(|wb| {
            let mut out = Vec::with_capacity(m * wb.len() / k);
            for r in 0..m {
                let xr = &x[r * k..(r + 1) * k];
                out.extend(wb.chunks_exact(k).map(|wr| dot(xr, wr)));
            }
            out
        })
        .collect();
    // Blocks hold (m × rows of the block); interleave into y's row-major layout.
    let mut y = vec![0f32; m * n];
    for (bi, block) in cols.iter().enumerate() {
        let width = block.len() / m;
        for r in 0..m {
            y[r * n + bi * ROWS..r * n + bi * ROWS + width]
                .copy_from_slice(&block[r * width..(r + 1) * width]);
        }
    }
    y
}

impl CustomOp2 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_l: &Layout,
        w: &CpuStorage,
        w_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = x_l.shape().dims2()?;
        let (n, k2) = w_l.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("frozen-matmul: x has {k} features, W expects {k2}");
        }
        if let (CpuStorage::F32(xv), CpuStorage::F32(wv), Some((xa, xb)), Some((wa, wb))) =
            (x, w, x_l.contiguous_offsets(), w_l.contiguous_offsets())
        {
            if m <= GEMV_ROWS {
                return Ok((
                    CpuStorage::F32(gemv(&xv[xa..xb], &wv[wa..wb], m, n, k)),
                    Shape::from((m, n)),
                ));
            }
        }
        let y = x.matmul(w, (1, m, n, k), x_l, &w_l.transpose(0, 1)?)?;
        Ok((y, Shape::from((m, n))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad_y.matmul(w)?), None))
    }
}

/// `x Wᵀ` for a 2-D x (m, in); W gets no gradient.
pub fn frozen_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.apply_op2(w, FrozenMatmul)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn output_and_input_gradient_equal_the_composed_matmul() -> Result<()> {
        let dev = Device::Cpu;
        for (dims, out) in [
            (vec![1usize, 1, 3], 5usize),
            (vec![2, 7, 9], 4),
            (vec![6, 16], 33),
            // The matrix-vector path: ≤ 4 rows, W's rows in several blocks, k not a multiple of 8.
            (vec![3, 45], 150),
            (vec![1, 1, 64], 64),
        ] {
            let k = *dims.last().unwrap();
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, dims.clone(), &dev)?)?;
            let w = Tensor::randn(0f32, 1.0, (out, k), &dev)?;
            let y = crate::layers::linear::matmul_t(&x, &w)?;
            let y_ref = x.broadcast_matmul(&w.t()?)?;
            let probe = Tensor::randn(0f32, 1.0, y_ref.dims(), &dev)?;
            assert_eq!(y.dims(), y_ref.dims());
            let dy = (&y - &y_ref)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(dy < 1e-5, "{dims:?}: {dy}");
            let g = (y * &probe)?.sum_all()?.backward()?;
            let g_ref = (y_ref * &probe)?.sum_all()?.backward()?;
            let (gx, gx_ref) = (g.get(&x).unwrap(), g_ref.get(&x).unwrap());
            let d = (gx - gx_ref)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            let scale = gx_ref.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(d <= 1e-5 * scale.max(1.0), "{dims:?}: {d}");
            assert!(g.get(&w).is_none(), "the frozen weight got a gradient");
        }
        Ok(())
    }
}
