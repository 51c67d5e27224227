//! A frozen, quantized linear weight (GGUF k-quants and legacy quants kept as stored, or NF4 as
//! bitsandbytes makes it) that still passes gradients to its input, for QLoRA-style training:
//! candle's `QMatMul` has no backward.
//! A GGUF weight multiplies a few rows at a time (decoding), or any number of rows with 8-bit
//! activations (generation), through qkernels without dequantizing the tensor; otherwise forward
//! and backward each dequantize the weight for the one matmul and drop it, so only the quantized
//! bytes stay resident between layers.
//! Shapes: x (…, in); W (out, in) quantized; y = x Wᵀ (…, out); ∂x = ∂y W.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor};

use crate::qkernels::{self, Activations, QFormat, QMatrix};

/// A frozen weight (out, in) held quantized.
#[derive(Debug)]
pub enum QuantWeight {
    /// A GGUF matrix in a block format graft multiplies itself (its bytes as the file stores them).
    Gguf(GgufMatrix),
    /// A GGUF tensor of another quantized type, through candle.
    Candle(QTensor),
    /// NF4 (+ double quantization), bitsandbytes' format.
    Nf4(super::nf4::Nf4Tensor),
}

/// Where a [`GgufMatrix`]'s bytes live.
#[derive(Debug)]
pub enum GgufBytes {
    /// A range of the memory-mapped file: nothing copied, pages read in as they are used (and
    /// shared with any other process that maps the file).
    Mapped(Arc<memmap2::Mmap>, std::ops::Range<usize>),
    /// Rows reordered at load time (Llama's q/k, stored interleaved).
    Owned(Vec<u8>),
}

/// A (rows, cols) GGUF matrix in one of the [`QFormat`]s.
#[derive(Debug)]
pub struct GgufMatrix {
    pub format: QFormat,
    pub rows: usize,
    pub cols: usize,
    bytes: GgufBytes,
}

impl GgufMatrix {
    /// Checks that the bytes are `rows` rows of `cols` weights in whole blocks.
    pub fn new(
        format: QFormat,
        (rows, cols): (usize, usize),
        bytes: GgufBytes,
    ) -> std::result::Result<Self, String> {
        let m = Self {
            format,
            rows,
            cols,
            bytes,
        };
        QMatrix::new(format, m.data(), rows, cols)?;
        Ok(m)
    }

    pub fn data(&self) -> &[u8] {
        match &self.bytes {
            GgufBytes::Mapped(map, range) => &map[range.clone()],
            GgufBytes::Owned(v) => v,
        }
    }

    pub fn matrix(&self) -> QMatrix<'_> {
        QMatrix {
            format: self.format,
            data: self.data(),
            rows: self.rows,
            cols: self.cols,
        }
    }
}

impl QuantWeight {
    /// The weight in f32 on `device`.
    pub fn dequantize(&self, device: &Device) -> Result<Tensor> {
        match self {
            QuantWeight::Gguf(m) => {
                Tensor::from_vec(m.matrix().dequantize(), (m.rows, m.cols), device)
            }
            QuantWeight::Candle(q) => q.dequantize(device),
            QuantWeight::Nf4(q) => Tensor::from_vec(q.dequantize_vec(), q.shape, device),
        }
    }

    /// The weight in f32 as a row-major vector.
    pub fn dequantize_vec(&self) -> Result<Vec<f32>> {
        match self {
            QuantWeight::Gguf(m) => Ok(m.matrix().dequantize()),
            QuantWeight::Candle(q) => q.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1(),
            QuantWeight::Nf4(q) => Ok(q.dequantize_vec()),
        }
    }

    /// Rows `ids` of the weight (an embedding lookup), dequantized to f32: (ids, in).
    pub fn rows(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        let QuantWeight::Gguf(m) = self else {
            let w = self.dequantize(device)?;
            return w.index_select(&Tensor::new(ids, device)?, 0);
        };
        let mut out = vec![0f32; ids.len() * m.cols];
        for (o, &id) in out.chunks_exact_mut(m.cols).zip(ids) {
            if id as usize >= m.rows {
                candle_core::bail!("token id {id} is outside the {} embeddings", m.rows);
            }
            m.matrix().dequantize_row(id as usize, o);
        }
        Tensor::from_vec(out, (ids.len(), m.cols), device)
    }

    /// Bytes held (a mapped matrix's share of the file included).
    pub fn bytes(&self) -> usize {
        match self {
            QuantWeight::Gguf(m) => m.data().len(),
            QuantWeight::Candle(q) => q.storage_size_in_bytes(),
            QuantWeight::Nf4(q) => q.bytes(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct QuantLinearOp {
    pub weight: Arc<QuantWeight>,
}

impl QuantLinearOp {
    fn dense(&self) -> Result<Tensor> {
        self.weight.dequantize(&Device::Cpu)
    }
}

/// Up to this many rows a product with f32 activations goes through the row kernels; more rows
/// amortise dequantizing the whole weight for one GEMM.
const KERNEL_ROWS: usize = 4;

impl QuantLinearOp {
    /// y through the row kernels, when the weight's format has them and the rows are few or the
    /// thread asks for 8-bit activations.
    fn kernel_fwd(&self, x: &[f32], dims: &[usize]) -> Result<Option<(Vec<f32>, Shape)>> {
        let Some((&k, lead)) = dims.split_last() else {
            return Ok(None);
        };
        let m = lead.iter().product::<usize>();
        let acts = match (qkernels::activations(), &*self.weight) {
            (Activations::Q8Prompt, QuantWeight::Gguf(w)) if qkernels::has_gemm(w.format) => {
                Activations::Q8Prompt
            }
            (Activations::Q8Prompt, _) => Activations::F32,
            (a, _) => a,
        };
        let w = match &*self.weight {
            QuantWeight::Gguf(m) => m.matrix(),
            // NF4 has no integer kernel: its rows are dequantized one at a time for f32 products.
            QuantWeight::Nf4(w) if m <= KERNEL_ROWS || acts == Activations::Q8 => {
                if w.shape.1 != k {
                    candle_core::bail!("quant-linear: x has {k} features, W expects {}", w.shape.1);
                }
                let mut shape = lead.to_vec();
                shape.push(w.shape.0);
                return Ok(Some((w.matmul(x, m), Shape::from(shape))));
            }
            QuantWeight::Nf4(_) | QuantWeight::Candle(_) => return Ok(None),
        };
        // With f32 activations, many rows (a prompt) amortise dequantizing the weight for one
        // GEMM. With 8-bit activations (decoding steps) every row goes through the row kernels,
        // so a sequence's numbers do not depend on how many others share its batch.
        if w.cols != k {
            candle_core::bail!("quant-linear: x has {k} features, W expects {}", w.cols);
        }
        let mut shape = lead.to_vec();
        shape.push(w.rows);
        let y = if acts == Activations::F32 && m > KERNEL_ROWS {
            dense_product(&w, x, m)
        } else {
            w.matmul(x, m, acts)
        };
        Ok(Some((y, Shape::from(shape))))
    }
}

/// The largest weight (in values) whose dequantized buffer a thread keeps between products.
const REUSED_DENSE: usize = 1 << 24;

thread_local! {
    /// The dequantized weight of the product running on this thread: reused, because a fresh
    /// buffer per product page-faulted its whole size in again (a prompt dequantizes every layer).
    static DENSE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// y (m × rows) = x Wᵀ through W dequantized (in parallel) into a reused buffer and one GEMM.
fn dense_product(w: &QMatrix, x: &[f32], m: usize) -> Vec<f32> {
    let (n, k) = (w.rows, w.cols);
    let product = |buf: &mut Vec<f32>| {
        buf.resize(n * k, 0.0);
        w.dequantize_into(buf);
        let mut y = vec![0f32; m * n];
        // b = Wᵀ (k × n): row stride 1, column stride k.
        super::cpu_op::gemm_par((m, n, k), &mut y, false, (x, k, 1), (buf, 1, k), 1.0);
        y
    };
    // A layer's weights are reused; an embedding-sized head (Gemma-3: 671 MB in f32) is not kept.
    if n * k > REUSED_DENSE {
        return product(&mut Vec::new());
    }
    DENSE.with_borrow_mut(product)
}

impl CustomOp1 for QuantLinearOp {
    fn name(&self) -> &'static str {
        "quant-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims().to_vec();
        let x = match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((start, end))) => &v[start..end],
            _ => candle_core::bail!("quant-linear: needs a contiguous f32 input"),
        };
        if let Some((y, shape)) = self.kernel_fwd(x, &dims)? {
            return Ok((CpuStorage::F32(y), shape));
        }
        let x = Tensor::from_slice(x, dims.clone(), &Device::Cpu)?;
        let w = self.dense()?;
        let y = x.broadcast_matmul(&w.t()?)?;
        let shape = y.shape().clone();
        Ok((CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?), shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let w = self.dense()?.to_dtype(grad_res.dtype())?;
        Ok(Some(grad_res.broadcast_matmul(&w)?))
    }
}

/// `x Wᵀ` with W quantized; differentiable in x.
pub fn quant_matmul(x: &Tensor, weight: &Arc<QuantWeight>) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(candle_core::DType::F32)?.contiguous()?;
    x.apply_op1(QuantLinearOp {
        weight: weight.clone(),
    })?
    .to_dtype(dtype)
}
