//! Products with GGUF-quantized weights that never dequantize a whole tensor: each thread takes a
//! block of weight rows and multiplies them with every activation row, reading each quantized
//! byte once. Two numerics:
//! - [`Activations::F32`]: each weight row is dequantized into a buffer and dotted with the f32
//!   activations, so the result equals dequantize-then-f32 to rounding (score, eval, classify).
//! - [`Activations::Q8`]: activations are quantized to 8 bits per block and multiplied in integer
//!   arithmetic with AVX2 (llama.cpp's method and error), for decoding; formats without such a
//!   kernel, or CPUs without AVX2, FMA and F16C (checked at run time), take the f32 path. With
//!   AVX-512 VNNI, Q4_0, Q5_0 and Q8_0 steps take 16 weight rows at a time (`avx512_gemv`).
//! - [`Activations::Q8Prompt`]: a prompt's products while generating, through the GEMM of
//!   `avx512_gemm` where the CPU has AVX-512 VNNI.
//!
//! Shapes: W (n, k) quantized along k; x (m, k) f32; y = x Wᵀ (m, n).

pub mod formats;
pub mod q8;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_dequant;
#[cfg(target_arch = "x86_64")]
mod avx2_k23;
#[cfg(target_arch = "x86_64")]
mod avx512_gemm;
#[cfg(target_arch = "x86_64")]
mod avx512_gemv;

use std::cell::Cell;

pub use formats::QFormat;
use q8::{Q8Block, Q8KBlock};

/// How activations enter a product with quantized weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activations {
    F32,
    Q8,
    /// A prompt's products while generating: 8-bit where the prompt GEMM takes the weight's
    /// format on this CPU (as llama.cpp runs prompts), f32 elsewhere (where the row kernels would
    /// be slower than dequantizing for one GEMM).
    Q8Prompt,
}

thread_local! {
    static ACTIVATIONS: Cell<Activations> = const { Cell::new(Activations::F32) };
}

/// The numerics quantized products use on this thread (f32 unless a scope says otherwise).
pub fn activations() -> Activations {
    ACTIVATIONS.with(Cell::get)
}

/// Sets the numerics of quantized products on this thread until the guard drops (generation
/// sets [`Activations::Q8`]; the ops choose on the calling thread, before they fan out).
pub fn activations_scope(a: Activations) -> ActivationsScope {
    ActivationsScope(ACTIVATIONS.with(|c| c.replace(a)))
}

pub struct ActivationsScope(Activations);

static GENERATION_F32: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The numerics generation uses (8-bit activations, as llama.cpp, unless set to f32 here for the
/// whole process: `--f32-activations`).
pub fn generation_activations() -> Activations {
    match GENERATION_F32.load(std::sync::atomic::Ordering::Relaxed) {
        true => Activations::F32,
        false => Activations::Q8,
    }
}

pub fn set_generation_activations(a: Activations) {
    GENERATION_F32.store(a == Activations::F32, std::sync::atomic::Ordering::Relaxed);
}

impl Drop for ActivationsScope {
    fn drop(&mut self) {
        ACTIVATIONS.with(|c| c.set(self.0));
    }
}

/// Whether this CPU runs the integer kernels (AVX2, FMA and F16C).
pub fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether this CPU runs the AVX-512 VNNI kernels (F, BW and VNNI, besides the row kernels').
pub fn vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            simd_available()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The numerics of a prompt's products while generating with `generation_activations()`.
pub fn prompt_activations() -> Activations {
    match generation_activations() {
        Activations::F32 => Activations::F32,
        _ => Activations::Q8Prompt,
    }
}

type Dot32 = unsafe fn(&[u8], &[Q8Block]) -> f32;
type Dot32x4 = unsafe fn(&[u8], &[&[Q8Block]; 4]) -> [f32; 4];
type Dot256 = unsafe fn(&[u8], &[Q8KBlock]) -> f32;
type Dot256x4 = unsafe fn(&[u8], &[&[Q8KBlock]; 4]) -> [f32; 4];

/// A format's integer kernels: one activation row, and four at once (each weight block unpacked
/// once for the four).
#[derive(Clone, Copy)]
enum IntKernel {
    Blocks32(Dot32, Dot32x4),
    Blocks256(Dot256, Dot256x4),
}

/// The integer kernels of `format` on this CPU, if any.
fn int_kernel(format: QFormat) -> Option<IntKernel> {
    if !simd_available() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        use avx2::*;
        use IntKernel::*;
        Some(match format {
            QFormat::Q4_0 => Blocks32(q4_0, q4_0_x4),
            QFormat::Q4_1 => Blocks32(q4_1, q4_1_x4),
            QFormat::Q5_0 => Blocks32(q5_0, q5_0_x4),
            QFormat::Q5_1 => Blocks32(q5_1, q5_1_x4),
            QFormat::Q8_0 => Blocks32(q8_0, q8_0_x4),
            QFormat::Q4K => Blocks256(q4k, q4k_x4),
            QFormat::Q5K => Blocks256(q5k, q5k_x4),
            QFormat::Q6K => Blocks256(q6k, q6k_x4),
            QFormat::Q2K => Blocks256(q2k, q2k_x4),
            QFormat::Q3K => Blocks256(q3k, q3k_x4),
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// Whether decoding steps with `format` take the 16-row kernel (`avx512_gemv`) on this CPU.
fn has_gemv(format: QFormat) -> bool {
    matches!(format, QFormat::Q4_0 | QFormat::Q5_0 | QFormat::Q8_0) && vnni_available()
}

/// Whether `format` has the prompt GEMM on this CPU.
pub fn has_gemm(format: QFormat) -> bool {
    #[cfg(target_arch = "x86_64")]
    return vnni_available() && avx512_gemm::layout(format).is_some();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// The panel a thread repacks weight rows into, reused across tasks and products.
    static PANEL: std::cell::RefCell<avx512_gemm::Panel> = std::cell::RefCell::default();
}

/// A raw pointer that tasks writing disjoint parts of one buffer share.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: each task writes its own columns of y and nothing reads y until all are done.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// `o[r]` = the dot product of a weight row with activation row r: four rows at a time, then
/// one at a time.
///
/// # Safety
/// The kernels' CPU features must be present (they were detected at run time).
unsafe fn dot_rows<X>(
    row: &[u8],
    xs: &[Vec<X>],
    o: &mut [f32],
    one: unsafe fn(&[u8], &[X]) -> f32,
    four: unsafe fn(&[u8], &[&[X]; 4]) -> [f32; 4],
) {
    let mut r = 0;
    while r + 4 <= xs.len() {
        let group = [&xs[r][..], &xs[r + 1][..], &xs[r + 2][..], &xs[r + 3][..]];
        o[r..r + 4].copy_from_slice(&four(row, &group));
        r += 4;
    }
    for (o, x) in o[r..].iter_mut().zip(&xs[r..]) {
        *o = one(row, x);
    }
}

/// Whole blocks of `format` dequantized into `out`: with AVX2 where this CPU has it and the
/// format has a path (bit-identical to the scalar dequantizers), otherwise scalar.
pub fn dequantize_row(format: QFormat, row: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the kernels' CPU features were detected at run time.
    if simd_available() && unsafe { avx2_dequant::dequantize_row(format, row, out) } {
        return;
    }
    format.dequantize_row(row, out);
}

/// A row-major quantized matrix borrowed as the bytes GGUF stores.
#[derive(Debug, Clone, Copy)]
pub struct QMatrix<'a> {
    pub format: QFormat,
    pub data: &'a [u8],
    pub rows: usize,
    pub cols: usize,
}

impl<'a> QMatrix<'a> {
    /// Checks that `data` holds `rows` rows of `cols` weights in whole blocks.
    pub fn new(format: QFormat, data: &'a [u8], rows: usize, cols: usize) -> Result<Self, String> {
        if !cols.is_multiple_of(format.block_len()) {
            return Err(format!(
                "{format:?}: {cols} columns are not whole blocks of {}",
                format.block_len()
            ));
        }
        let want = rows * cols / format.block_len() * format.block_bytes();
        if data.len() != want {
            return Err(format!(
                "{format:?} ({rows}, {cols}): {} bytes, expected {want}",
                data.len()
            ));
        }
        Ok(Self {
            format,
            data,
            rows,
            cols,
        })
    }

    fn row_bytes(&self) -> usize {
        self.cols / self.format.block_len() * self.format.block_bytes()
    }

    pub fn row(&self, i: usize) -> &'a [u8] {
        let n = self.row_bytes();
        &self.data[i * n..(i + 1) * n]
    }

    /// Row `i` dequantized into `out` (`cols` long).
    pub fn dequantize_row(&self, i: usize, out: &mut [f32]) {
        dequantize_row(self.format, self.row(i), out)
    }

    /// The whole matrix in f32, row-major, dequantized in parallel (runs of rows per task).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        self.dequantize_into(&mut out);
        out
    }

    /// [`Self::dequantize`] into `out` (`rows × cols` long).
    pub fn dequantize_into(&self, out: &mut [f32]) {
        use rayon::prelude::*;
        assert_eq!(
            out.len(),
            self.rows * self.cols,
            "dequantize_into: wrong length"
        );
        let per_task = (self.rows / (rayon::current_num_threads() * 4)).max(1);
        out.par_chunks_mut(per_task * self.cols)
            .enumerate()
            .for_each(|(t, o)| {
                for (j, o) in o.chunks_exact_mut(self.cols).enumerate() {
                    self.dequantize_row(t * per_task + j, o);
                }
            });
    }

    /// y (m × rows) = x (m × cols) Wᵀ.
    pub fn matmul(&self, x: &[f32], m: usize, acts: Activations) -> Vec<f32> {
        use rayon::prelude::*;
        let (n, k) = (self.rows, self.cols);
        assert_eq!(x.len(), m * k, "quantized matmul: x is not (m, {k})");
        #[cfg(target_arch = "x86_64")]
        if acts == Activations::Q8Prompt {
            if let Some(l) = avx512_gemm::layout(self.format).filter(|_| vnni_available()) {
                return self.gemm(x, m, l);
            }
        }
        #[cfg(target_arch = "x86_64")]
        // Decoding steps with a signed 32-weight format: 16 rows at a time, for every step
        // whatever its batch (the formats with a min keep the row kernels, which are faster
        // for them alone).
        if acts == Activations::Q8 && has_gemv(self.format) {
            return self.gemv(x, m);
        }
        let kernel = match acts {
            Activations::Q8 | Activations::Q8Prompt => int_kernel(self.format),
            Activations::F32 => None,
        };
        let (mut xq32, mut xq256) = (Vec::new(), Vec::new());
        match kernel {
            Some(IntKernel::Blocks32(..)) => {
                xq32 = x.chunks_exact(k).map(q8::quantize_q8).collect()
            }
            Some(IntKernel::Blocks256(..)) => {
                xq256 = x.chunks_exact(k).map(q8::quantize_q8k).collect()
            }
            None => {}
        }
        // Enough tasks per thread to balance, each a run of whole rows.
        let per_task = (n / (rayon::current_num_threads() * 8)).clamp(8, 256);
        // yt is (n, m): each task writes its own rows.
        let mut yt = vec![0f32; n * m];
        yt.par_chunks_mut(per_task * m)
            .enumerate()
            .for_each(|(t, out)| {
                let mut buf = Vec::new();
                for (j, o) in out.chunks_exact_mut(m).enumerate() {
                    let row = self.row(t * per_task + j);
                    match kernel {
                        // SAFETY: the kernels' CPU features were detected at run time.
                        Some(IntKernel::Blocks32(one, four)) => unsafe {
                            dot_rows(row, &xq32, o, one, four)
                        },
                        Some(IntKernel::Blocks256(one, four)) => unsafe {
                            dot_rows(row, &xq256, o, one, four)
                        },
                        None => {
                            buf.resize(k, 0f32);
                            dequantize_row(self.format, row, &mut buf);
                            for (o, xr) in o.iter_mut().zip(x.chunks_exact(k)) {
                                *o = crate::layers::cpu_op::dot(xr, &buf);
                            }
                        }
                    }
                }
            });
        transposed(yt, n, m)
    }

    /// y (m × rows) through the prompt GEMM: each task repacks 16 weight rows into a panel
    /// and multiplies every activation row with it.
    #[cfg(target_arch = "x86_64")]
    fn gemm(&self, x: &[f32], m: usize, l: avx512_gemm::Layout) -> Vec<f32> {
        use avx512_gemm::{pack, run_panel, Acts, LANES};
        use rayon::prelude::*;
        let (n, k) = (self.rows, self.cols);
        let acts = Acts::new(x, m, k, l);
        let mut y = vec![0f32; m * n];
        let out = SharedOut(y.as_mut_ptr());
        (0..n.div_ceil(LANES)).into_par_iter().for_each(|c| {
            let out = out;
            let (row0, lanes) = (c * LANES, LANES.min(n - c * LANES));
            let rows: Vec<&[u8]> = (row0..row0 + lanes).map(|i| self.row(i)).collect();
            PANEL.with_borrow_mut(|panel| {
                // SAFETY: the CPU features were detected at run time (`vnni_available`); this
                // task writes columns row0..row0 + lanes of y only.
                unsafe {
                    pack(panel, self.format, &rows, k, l);
                    run_panel(panel, &acts, l, (m, n), (row0, lanes), out.0);
                }
            });
        });
        y
    }

    /// Decoding steps' y (m × rows) with Q4_0, Q5_0 or Q8_0: 16 weight rows at a time against
    /// every activation row (`avx512_gemv`).
    #[cfg(target_arch = "x86_64")]
    fn gemv(&self, x: &[f32], m: usize) -> Vec<f32> {
        use rayon::prelude::*;
        let (n, k) = (self.rows, self.cols);
        let xq: Vec<Vec<q8::Q8Block>> = x.chunks_exact(k).map(q8::quantize_q8).collect();
        let sums: Vec<Vec<i32>> = xq
            .iter()
            .map(|r| {
                r.iter()
                    .map(|b| b.qs.iter().map(|&v| v as i32).sum())
                    .collect()
            })
            .collect();
        let (xs, sums): (Vec<&[q8::Q8Block]>, Vec<&[i32]>) = xq
            .iter()
            .map(Vec::as_slice)
            .zip(sums.iter().map(Vec::as_slice))
            .unzip();
        let mut y = vec![0f32; m * n];
        let out = SharedOut(y.as_mut_ptr());
        let groups = n.div_ceil(16);
        let per_task = (groups / (rayon::current_num_threads() * 8)).max(1);
        (0..groups.div_ceil(per_task))
            .into_par_iter()
            .for_each(|t| {
                let out = out;
                let mut buf = vec![0f32; 16 * m];
                // The task's first group: nothing read ahead for it (each group asks for the next).
                let start = self.row(t * per_task * 16).as_ptr();
                let len = 16.min(n - t * per_task * 16) * self.row_bytes();
                for line in (0..len).step_by(64) {
                    use std::arch::x86_64::*;
                    // SAFETY: a prefetch does not fault; the address stays within the matrix.
                    unsafe { _mm_prefetch::<_MM_HINT_T1>(start.add(line) as *const i8) };
                }
                for g in t * per_task..((t + 1) * per_task).min(groups) {
                    let first = g * 16;
                    let lanes = 16.min(n - first);
                    let rows: [&[u8]; 16] =
                        std::array::from_fn(|i| self.row(first + i.min(lanes - 1)));
                    // SAFETY: the CPU features were detected at run time (`vnni_available`); the
                    // rows and activations are whole blocks of one length; this task writes
                    // columns first..first + lanes of y only.
                    unsafe {
                        avx512_gemv::rows16(self.format, &rows, &xs, &sums, &mut buf);
                        for r in 0..m {
                            let dst = out.0.add(r * n + first);
                            std::ptr::copy_nonoverlapping(buf.as_ptr().add(r * 16), dst, lanes);
                        }
                    }
                }
            });
        y
    }
}

/// `yt` (n, m) as (m, n).
fn transposed(yt: Vec<f32>, n: usize, m: usize) -> Vec<f32> {
    if m == 1 {
        return yt;
    }
    let mut y = vec![0f32; m * n];
    for (i, row) in yt.chunks_exact(m).enumerate() {
        for (r, v) in row.iter().enumerate() {
            y[r * n + i] = *v;
        }
    }
    y
}

#[cfg(test)]
mod tests;
