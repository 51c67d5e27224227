//! softmax(scale·Q Kᵀ + M) V (scores optionally soft-capped, cap·tanh(·/cap), as Gemma 2) as one op whose backward recomputes the probabilities instead of
//! keeping them: the composed version holds the scores, the masked scores and the probabilities —
//! three (B, H, T, S) f32 tensors per layer until the backward (for SmolLM2 at 4×256 tokens,
//! ~850 MB over its 30 layers). Here only Q, K, V and the output are kept. Computed one
//! (batch row, kv head) block at a time, blocks in parallel (rayon) with a single-threaded GEMM
//! each, so the transient scores are (R·T, S) per thread.
//!
//! Shapes: q (B, K, R·T, D) — the R query heads sharing kv head k folded into rows, as
//! attention.rs lays them out; k, v (B, K, S, D); mask additive, (T, S) or (B, 1, 1, T, S);
//! out (B, K, R·T, D). Backward per block, P = softmax(S): dV = Pᵀ dO; dP = dO Vᵀ;
//! dS = P ⊙ (dP − rowsum(dO ⊙ O)); dQ = scale·dS K; dK = scale·dSᵀ Q.

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::cpu_op::{dot, exp, f32_values, gemm_into, input_f32, output_like, sum_f32};

/// `rows` rows of `D` values, each starting `stride` elements after the previous one: a head's
/// slice of a (tokens, heads·D) matrix without copying it out.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a> {
    pub data: &'a [f32],
    pub stride: usize,
}

/// One attention block: `rows` query rows against `s` keys; query row i takes mask row i % T
/// (R heads folded into rows share the mask).
pub(crate) struct Block<'a> {
    /// (T, S) additive.
    pub mask: &'a [f32],
    pub t: usize,
    pub s: usize,
    pub d: usize,
    pub rows: usize,
    pub scale: f32,
    /// Gemma 2's logit soft-capping: scores → cap·tanh(scores / cap) before the mask.
    pub softcap: Option<f32>,
}

impl Block<'_> {
    /// Probabilities p (rows × S); with soft-capping, `tanh` (when given) receives
    /// tanh(scores / cap) for the backward.
    fn probs(&self, q: Rows, k: Rows, p: &mut [f32], mut tanh: Option<&mut [f32]>) {
        let (s, d) = (self.s, self.d);
        gemm_into(
            (self.rows, s, d),
            p,
            false,
            (q.data, q.stride, 1),
            (k.data, 1, k.stride),
            self.scale,
        );
        for (i, row) in p.chunks_mut(s).enumerate() {
            self.softmax_row(i, row, tanh.as_deref_mut());
        }
    }

    /// The columns of mask row `i % T` between the first and last visible key: only they need
    /// exponentials (half of them under a causal mask); the rest are exactly zero.
    fn visible(&self, i: usize) -> (&[f32], usize, usize) {
        let (s, t) = (self.s, self.t);
        let m = &self.mask[(i % t) * s..(i % t + 1) * s];
        let lo = m.iter().position(|v| v.is_finite()).unwrap_or(0);
        let hi = m.iter().rposition(|v| v.is_finite()).map_or(s, |j| j + 1);
        (m, lo, hi)
    }

    /// Row i of the scores (scale·q kᵀ, S long) → its probabilities, in place.
    fn softmax_row(&self, i: usize, row: &mut [f32], tanh: Option<&mut [f32]>) {
        self.softmax_body(i, row, tanh)
    }

    /// [`Self::softmax_row`], inlined into callers compiled for wider vectors.
    #[inline(always)]
    fn softmax_body(&self, i: usize, row: &mut [f32], mut tanh: Option<&mut [f32]>) {
        let s = self.s;
        let (m, lo, hi) = self.visible(i);
        if let Some(cap) = self.softcap {
            for (j, x) in row[lo..hi].iter_mut().enumerate() {
                let t = (*x / cap).tanh();
                *x = cap * t;
                if let Some(th) = tanh.as_deref_mut() {
                    th[i * s + lo + j] = t;
                }
            }
        }
        let mut max = f32::NEG_INFINITY;
        for (x, &mv) in row[lo..hi].iter_mut().zip(&m[lo..hi]) {
            *x += mv;
            max = max.max(*x);
        }
        for x in row[lo..hi].iter_mut() {
            *x = exp(*x - max);
        }
        let sum = sum_f32(&row[lo..hi]);
        let inv = 1.0 / sum;
        row[..lo].fill(0.0);
        row[lo..hi].iter_mut().for_each(|x| *x *= inv);
        row[hi..].fill(0.0);
    }

    /// A decoding step's block (one query position, R heads, against the cache): one dot product
    /// per visible key and one scaled add of each visible value. A GEMM's packing cost more than
    /// these products, and skipping the masked keys makes a sequence's result the same with or
    /// without other sequences' padding beside it.
    fn step(&self, q: Rows, k: Rows, v: Rows, o: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if crate::qkernels::simd_available() {
            // SAFETY: AVX2 and FMA were detected at run time.
            return unsafe { self.step_avx2(q, k, v, o) };
        }
        self.step_body(q, k, v, o)
    }

    /// [`Self::step`] with AVX2 and FMA: four keys dotted at once, the output's columns held in
    /// registers while the values stream past (attention_step_avx2.rs).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn step_avx2(&self, q: Rows, k: Rows, v: Rows, o: &mut [f32]) {
        use super::attention_step_avx2::{scores, weighted_sum};
        let (s, d) = (self.s, self.d);
        let mut p = vec![0f32; s];
        let (_, lo, hi) = self.visible(0);
        for (i, oi) in o.chunks_exact_mut(d).enumerate().take(self.rows) {
            scores(
                &q.data[i * q.stride..i * q.stride + d],
                k,
                (lo, hi),
                self.scale,
                &mut p,
            );
            self.softmax_body(i, &mut p, None);
            weighted_sum(&p, v, (lo, hi), oi);
        }
    }

    #[inline(always)]
    fn step_body(&self, q: Rows, k: Rows, v: Rows, o: &mut [f32]) {
        let (s, d) = (self.s, self.d);
        let mut p = vec![0f32; s];
        for (i, oi) in o.chunks_exact_mut(d).enumerate().take(self.rows) {
            let (_, lo, hi) = self.visible(i);
            let qi = &q.data[i * q.stride..i * q.stride + d];
            for (j, pj) in p.iter_mut().enumerate().take(hi).skip(lo) {
                *pj = self.scale * dot(qi, &k.data[j * k.stride..j * k.stride + d]);
            }
            self.softmax_row(i, &mut p, None);
            oi.fill(0.0);
            for (j, &pj) in p.iter().enumerate().take(hi).skip(lo) {
                let vj = &v.data[j * v.stride..j * v.stride + d];
                for (o, &x) in oi.iter_mut().zip(vj) {
                    *o += pj * x;
                }
            }
        }
    }

    /// o (rows × D, contiguous) = softmax(scale·q kᵀ + mask) v.
    pub fn forward(&self, q: Rows, k: Rows, v: Rows, o: &mut [f32]) {
        // One query position against a cache of earlier keys: a decoding step.
        if self.t == 1 && self.s > 1 {
            return self.step(q, k, v, o);
        }
        let mut p = vec![0f32; self.rows * self.s];
        self.probs(q, k, &mut p, None);
        gemm_into(
            (self.rows, self.d, self.s),
            o,
            false,
            (&p, self.s, 1),
            (v.data, v.stride, 1),
            1.0,
        );
    }

    /// dq (rows × D) and dk, dv (S × D), contiguous, from the output o and its gradient g; with
    /// `accumulate` dk and dv are added to (query heads sharing one kv head).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        (q, k, v, o, g): (Rows, Rows, Rows, Rows, Rows),
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
        accumulate: bool,
    ) {
        let (rows, s, d) = (self.rows, self.s, self.d);
        let mut p = vec![0f32; rows * s];
        let mut tanh = match self.softcap {
            Some(_) => vec![0f32; rows * s],
            None => Vec::new(),
        };
        self.probs(q, k, &mut p, self.softcap.map(|_| &mut tanh[..]));
        // dV = Pᵀ dO
        gemm_into(
            (s, d, rows),
            dv,
            accumulate,
            (&p, 1, s),
            (g.data, g.stride, 1),
            1.0,
        );
        // dP = dO Vᵀ, then dS = P ⊙ (dP − rowsum(dO ⊙ O)) in place.
        let mut ds = vec![0f32; rows * s];
        gemm_into(
            (rows, s, d),
            &mut ds,
            false,
            (g.data, g.stride, 1),
            (v.data, 1, v.stride),
            1.0,
        );
        for i in 0..rows {
            let (gi, oi) = (&g.data[i * g.stride..][..d], &o.data[i * o.stride..][..d]);
            let di: f32 = gi.iter().zip(oi).map(|(a, b)| a * b).sum();
            for (x, &pv) in ds[i * s..(i + 1) * s]
                .iter_mut()
                .zip(&p[i * s..(i + 1) * s])
            {
                *x = pv * (*x - di);
            }
        }
        // Through the cap: d(cap·tanh(u/cap))/du = 1 − tanh².
        if self.softcap.is_some() {
            ds.iter_mut()
                .zip(&tanh)
                .for_each(|(x, t)| *x *= 1.0 - t * t);
        }
        // dQ = scale·dS K; dK = scale·dSᵀ Q
        gemm_into(
            (rows, d, s),
            dq,
            false,
            (&ds, s, 1),
            (k.data, k.stride, 1),
            self.scale,
        );
        gemm_into(
            (s, d, rows),
            dk,
            accumulate,
            (&ds, 1, s),
            (q.data, q.stride, 1),
            self.scale,
        );
    }
}

/// An f32 (B, K, S, D) input whose (batch, head) blocks each hold S contiguous rows, blocks
/// evenly spaced (a view of the first S positions of a KV cache buffer): the storage from the
/// first element, and the distance between blocks.
fn head_blocks<'a>(s: &'a CpuStorage, l: &Layout) -> Option<(&'a [f32], usize)> {
    let CpuStorage::F32(v) = s else { return None };
    let (dims, st) = (l.shape().dims(), l.stride());
    if dims.len() != 4 || st[3] != 1 || st[2] != dims[3] || st[0] != dims[1] * st[1] {
        return None;
    }
    let step = st[1];
    let end = l.start_offset() + (dims[0] * dims[1] - 1) * step + dims[2] * dims[3];
    (step >= dims[2] * dims[3] && end <= v.len()).then(|| (&v[l.start_offset()..end], step))
}

/// Block `blk` of n rows × d values, blocks `step` values apart.
fn strided_block(x: &[f32], blk: usize, step: usize, n: usize, d: usize) -> Rows<'_> {
    Rows {
        data: &x[blk * step..blk * step + n * d],
        stride: d,
    }
}

/// Block `blk` of n rows × d values of a contiguous (blocks, n, d) tensor.
fn contiguous_block(x: &[f32], blk: usize, n: usize, d: usize) -> Rows<'_> {
    Rows {
        data: &x[blk * n * d..(blk + 1) * n * d],
        stride: d,
    }
}

#[derive(Debug, Clone)]
struct FusedAttention {
    scale: f32,
    softcap: Option<f32>,
    /// (T, S) shared by every batch row, or (B, T, S), row-major.
    mask: Vec<f32>,
    batched_mask: bool,
    /// Mask rows T (query rows per kv head are R·T) and columns S.
    t: usize,
    s: usize,
}

impl FusedAttention {
    /// The kernel of batch row `b`'s blocks, `rows` query rows each.
    fn block(&self, b: usize, rows: usize, d: usize) -> Block<'_> {
        let (t, s) = (self.t, self.s);
        Block {
            mask: match self.batched_mask {
                true => &self.mask[b * t * s..(b + 1) * t * s],
                false => &self.mask[..],
            },
            t,
            s,
            d,
            rows,
            scale: self.scale,
            softcap: self.softcap,
        }
    }
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = "fused-attention";
        let q = input_f32(op, qs, ql)?;
        let (b, kh, rows, d) = q.dims4()?;
        let q = f32_values(&q)?;
        let s = self.s;
        // k, v: borrowed as (slice, block stride) when each (batch, head) block's rows are
        // contiguous (the KV cache's views), else converted once.
        let (k_owned, v_owned);
        let (k, k_step) = match head_blocks(ks, kl) {
            Some(kb) => kb,
            None => {
                k_owned = f32_values(&input_f32(op, ks, kl)?)?.to_vec();
                (&k_owned[..], s * d)
            }
        };
        let (v, v_step) = match head_blocks(vs, vl) {
            Some(vb) => vb,
            None => {
                v_owned = f32_values(&input_f32(op, vs, vl)?)?.to_vec();
                (&v_owned[..], s * d)
            }
        };
        let mut out = vec![0f32; b * kh * rows * d];
        out.par_chunks_mut(rows * d)
            .enumerate()
            .for_each(|(blk, o)| {
                self.block(blk / kh, rows, d).forward(
                    contiguous_block(&q, blk, rows, d),
                    strided_block(k, blk, k_step, s, d),
                    strided_block(v, blk, v_step, s, d),
                    o,
                );
            });
        let shape = Shape::from((b, kh, rows, d));
        Ok((output_like(out, qs), shape))
    }

    fn bwd(
        &self,
        q_in: &Tensor,
        k_in: &Tensor,
        v_in: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, kh, rows, d) = q_in.dims4()?;
        let s = self.s;
        let contiguous = |t: &Tensor| t.detach().contiguous();
        let (qt, kt, vt, ot, gt) = (
            contiguous(q_in)?,
            contiguous(k_in)?,
            contiguous(v_in)?,
            contiguous(out)?,
            contiguous(grad)?,
        );
        let (q, k, v, o, g) = (
            f32_values(&qt)?,
            f32_values(&kt)?,
            f32_values(&vt)?,
            f32_values(&ot)?,
            f32_values(&gt)?,
        );
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; q.len()],
            vec![0f32; k.len()],
            vec![0f32; v.len()],
        );
        dq.par_chunks_mut(rows * d)
            .zip(dk.par_chunks_mut(s * d))
            .zip(dv.par_chunks_mut(s * d))
            .enumerate()
            .for_each(|(blk, ((dqb, dkb), dvb))| {
                let at = |x, n| contiguous_block(x, blk, n, d);
                self.block(blk / kh, rows, d).backward(
                    (
                        at(&q, rows),
                        at(&k, s),
                        at(&v, s),
                        at(&o, rows),
                        at(&g, rows),
                    ),
                    dqb,
                    dkb,
                    dvb,
                    false,
                );
            });
        let back = |v: Vec<f32>, like: &Tensor| -> Result<Tensor> {
            Tensor::from_vec(v, like.shape(), &Device::Cpu)?.to_dtype(like.dtype())
        };
        Ok((
            Some(back(dq, q_in)?),
            Some(back(dk, k_in)?),
            Some(back(dv, v_in)?),
        ))
    }
}

/// softmax(softcap(scale·q kᵀ) + mask) v with the layout of attention.rs (see the module doc);
/// softcap(x) = cap·tanh(x / cap) when `softcap` is given, x otherwise.
pub fn fused_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
    softcap: Option<f64>,
) -> Result<Tensor> {
    let mask = match mask.rank() {
        2 => mask.clone(),
        5 => mask.squeeze(2)?.squeeze(1)?,
        r => candle_core::bail!("fused-attention: a mask of rank {r}"),
    };
    let (t, s) = (mask.dim(D::Minus2)?, mask.dim(D::Minus1)?);
    let (b, kh, rows, _) = q.dims4()?;
    if rows % t != 0 || k.dims4()? != (b, kh, s, q.dim(3)?) || v.dims() != k.dims() {
        candle_core::bail!(
            "fused-attention: q {:?}, k {:?}, v {:?} for a ({t}, {s}) mask",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let batched_mask = mask.rank() == 3;
    if batched_mask && mask.dim(0)? != b {
        candle_core::bail!(
            "fused-attention: a mask for {} rows, q has {b}",
            mask.dim(0)?
        );
    }
    let op = FusedAttention {
        scale: scale as f32,
        softcap: softcap.map(|c| c as f32),
        mask: mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
        batched_mask,
        t,
        s,
    };
    // k and v as they are when their blocks are already row-contiguous (no copy of the cache).
    let blocked = |t: &Tensor| -> Result<Tensor> {
        let (dims, st) = (t.dims(), t.stride());
        match st[3] == 1
            && st[2] == dims[3]
            && st[0] == dims[1] * st[1]
            && st[1] >= dims[2] * dims[3]
        {
            true => Ok(t.clone()),
            false => t.contiguous(),
        }
    };
    q.contiguous()?.apply_op3(&blocked(k)?, &blocked(v)?, op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn composed(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        scale: f64,
        softcap: Option<f64>,
        r: usize,
    ) -> Result<Tensor> {
        let (b, kh, rows, _) = q.dims4()?;
        let (t, s) = (rows / r, k.dim(2)?);
        let mut scores = (q.matmul(&k.t()?)? * scale)?;
        if let Some(cap) = softcap {
            scores = ((scores / cap)?.tanh()? * cap)?;
        }
        let scores = scores.reshape((b, kh, r, t, s))?.broadcast_add(mask)?;
        let p = candle_nn::ops::softmax(&scores, D::Minus1)?;
        p.reshape((b, kh, rows, s))?.matmul(v)
    }

    /// Output and the gradients of q, k, v equal the composed attention: T = 1, odd head dims,
    /// grouped queries (R = 3), a causal (T, S) mask and a packed (B, 1, 1, T, T) one, with and
    /// without soft-capping (a cap of 0.7 on unit-variance scores bends most of them).
    #[test]
    fn equals_composed_attention() -> Result<()> {
        let dev = Device::Cpu;
        for (b, kh, r, t, d) in [
            (1usize, 1usize, 1usize, 1usize, 4usize),
            (2, 2, 3, 5, 5),
            (3, 1, 2, 7, 8),
        ] {
            let q = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, kh, r * t, d), &dev)?)?;
            let k = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, kh, t, d), &dev)?)?;
            let v = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, kh, t, d), &dev)?)?;
            let causal = super::super::attention::causal_mask(t, 0, None, &dev)?;
            let seg: Vec<u32> = (0..b * t)
                .map(|i| ((i % t) * 2 / t.max(1)) as u32)
                .collect();
            let packed =
                super::super::attention::segment_mask(&Tensor::from_vec(seg, (b, t), &dev)?, None)?;
            let cases = [
                ("causal", causal.clone(), None),
                ("packed", packed.clone(), None),
                ("causal capped", causal, Some(0.7)),
                ("packed capped", packed, Some(0.7)),
            ];
            for (name, mask, cap) in cases {
                let scale = 1.0 / (d as f64).sqrt();
                let w = Tensor::randn(0f32, 1.0, (b, kh, r * t, d), &dev)?;
                let (qt, kt, vt) = (q.as_tensor(), k.as_tensor(), v.as_tensor());
                let fused = fused_attention(qt, kt, vt, &mask, scale, cap)?;
                let reference = composed(qt, kt, vt, &mask, scale, cap, r)?;
                let diff = (&fused - &reference)?
                    .abs()?
                    .max_all()?
                    .to_scalar::<f32>()?;
                assert!(diff < 1e-5, "{name} {b}×{kh}×{r}×{t}×{d}: output {diff}");
                let (gf, gc) = (
                    (fused * &w)?.sum_all()?.backward()?,
                    (reference * &w)?.sum_all()?.backward()?,
                );
                for (which, var) in [("q", &q), ("k", &k), ("v", &v)] {
                    let (x, y) = (
                        gf.get(var.as_tensor()).unwrap(),
                        gc.get(var.as_tensor()).unwrap(),
                    );
                    let scale = y.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
                    let diff = (x - y)?.abs()?.max_all()?.to_scalar::<f32>()?;
                    assert!(diff <= 1e-5 * scale, "{name} ∂{which}: {diff}");
                }
            }
        }
        Ok(())
    }

    /// A decoding step (one query position, R = 3 heads per kv head, against 9 cached keys) goes
    /// through the dot-product path and equals the composed attention: all keys visible, the
    /// first two masked (left padding), and soft-capped.
    #[test]
    fn a_decoding_step_equals_composed_attention() -> Result<()> {
        // Head sizes below, at and past the 64 columns the AVX2 kernel keeps in registers, and
        // key counts that are and are not multiples of the four it dots at once.
        for (s, d) in [(9usize, 8usize), (37, 64), (38, 72), (6, 3)] {
            step_matches_composed(s, d)?;
        }
        Ok(())
    }

    fn step_matches_composed(s: usize, d: usize) -> Result<()> {
        let dev = Device::Cpu;
        let (b, kh, r) = (2usize, 2usize, 3usize);
        let q = Tensor::randn(0f32, 1.0, (b, kh, r, d), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (b, kh, s, d), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (b, kh, s, d), &dev)?;
        let open = Tensor::zeros((1, s), DType::F32, &dev)?;
        let mut padded = vec![0f32; s];
        padded[..2].fill(f32::NEG_INFINITY);
        padded[s - 1] = f32::NEG_INFINITY;
        let padded = Tensor::from_vec(padded, (1, s), &dev)?;
        for (name, mask, cap) in [
            ("open", &open, None),
            ("padded", &padded, None),
            ("padded capped", &padded, Some(0.7)),
        ] {
            let scale = 1.0 / (d as f64).sqrt();
            let fused = fused_attention(&q, &k, &v, mask, scale, cap)?;
            let reference = composed(&q, &k, &v, mask, scale, cap, r)?;
            let diff = (&fused - &reference)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(diff < 1e-5, "{name} (s {s}, d {d}): output {diff}");
        }
        Ok(())
    }
}
