//! Rotary position embeddings in HF's "rotate half" layout (the GGUF loader un-permutes Llama's
//! interleaved q/k weights into this layout).
//! Shapes: positions (B, T); inv_freq (D/2); cos/sin (B, 1, T, D); x (B, H, T, D).

use candle_core::{DType, Result, Tensor, D};

/// cos and sin of `position * inv_freq`, computed in f32 as transformers does, duplicated to `D`.
pub fn cos_sin(inv_freq: &Tensor, positions: &Tensor, dtype: DType) -> Result<(Tensor, Tensor)> {
    let (b, t) = positions.dims2()?;
    let half = inv_freq.dim(0)?;
    let pos = positions.to_dtype(DType::F32)?.reshape((b, t, 1))?;
    let angles = pos.broadcast_mul(&inv_freq.reshape((1, 1, half))?)?;
    let angles = Tensor::cat(&[&angles, &angles], D::Minus1)?.unsqueeze(1)?;
    Ok((
        angles.cos()?.to_dtype(dtype)?,
        angles.sin()?.to_dtype(dtype)?,
    ))
}

/// `x * cos + rotate_half(x) * sin` with `rotate_half([x1, x2]) = [-x2, x1]`.
pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}
