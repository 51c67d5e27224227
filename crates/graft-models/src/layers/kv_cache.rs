//! The KV cache is owned by the caller and passed to every forward, so one model can serve several
//! sequences and training never carries hidden state.
//! Each layer's k and v live in buffers with room to grow (capacity doubling): a step writes its
//! positions in place and attends over a view of the filled part, instead of concatenating (a
//! copy of the whole cache per layer per token).
//! Shapes: per layer k, v (B, H_kv, S, D) with S the number of cached positions; buffers
//! (B, H_kv, capacity, D).

use candle_core::{Result, Tensor};

#[derive(Debug)]
struct Layer {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl Layer {
    fn views(&self) -> Result<(Tensor, Tensor)> {
        Ok((
            self.k.narrow(2, 0, self.len)?,
            self.v.narrow(2, 0, self.len)?,
        ))
    }

    /// Buffers of `capacity` positions holding this layer's `len` positions.
    fn grown(&self, capacity: usize) -> Result<Layer> {
        let (k, v) = self.views()?;
        Ok(Layer {
            k: with_capacity(&k, capacity)?,
            v: with_capacity(&v, capacity)?,
            len: self.len,
        })
    }
}

/// A (B, H, capacity, D) buffer whose first positions are `t`'s.
fn with_capacity(t: &Tensor, capacity: usize) -> Result<Tensor> {
    let (b, h, s, d) = t.dims4()?;
    let buf = Tensor::zeros((b, h, capacity, d), t.dtype(), t.device())?;
    if s > 0 {
        buf.slice_set(&t.contiguous()?, 2, 0)?;
    }
    Ok(buf)
}

#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<Layer>>,
}

/// A copy owns its buffers: appending to one copy never shows in another (each continuation of a
/// shared prompt writes the same positions).
impl Clone for KvCache {
    fn clone(&self) -> Self {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                l.as_ref().map(|l| Layer {
                    k: l.k.copy().unwrap_or_else(|_| l.k.clone()),
                    v: l.v.copy().unwrap_or_else(|_| l.v.clone()),
                    len: l.len,
                })
            })
            .collect();
        Self { layers }
    }
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: (0..num_layers).map(|_| None).collect(),
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |l| l.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends this step's k, v (B, H_kv, T, D) for `layer` and returns the full k, v to attend
    /// over (views of the buffers: rows contiguous within each head).
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = k.dim(2)?;
        let entry = &mut self.layers[layer];
        let needed = entry.as_ref().map_or(0, |l| l.len) + t;
        let capacity = needed.next_power_of_two().max(64);
        match entry {
            Some(l) if l.k.dim(2)? >= needed => {}
            Some(l) => *l = l.grown(capacity)?,
            None => {
                *entry = Some(Layer {
                    k: with_capacity(&k.narrow(2, 0, 0)?, capacity)?,
                    v: with_capacity(&v.narrow(2, 0, 0)?, capacity)?,
                    len: 0,
                })
            }
        }
        let Some(l) = entry.as_mut() else {
            candle_core::bail!("kv cache: layer {layer} was not filled")
        };
        l.k.slice_set(&k.contiguous()?, 2, l.len)?;
        l.v.slice_set(&v.contiguous()?, 2, l.len)?;
        l.len = needed;
        l.views()
    }

    /// Moves layers `at..` out into their own cache (a side network's layers, kept after the
    /// backbone's); [`Self::rejoin`] puts them back.
    pub fn split_off(&mut self, at: usize) -> KvCache {
        KvCache {
            layers: self.layers.split_off(at.min(self.layers.len())),
        }
    }

    pub fn rejoin(&mut self, tail: KvCache) {
        self.layers.extend(tail.layers);
    }

    /// Keeps batch rows `rows` (B') of every layer, in that order: beam search's reordering.
    pub fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        for l in self.layers.iter_mut().flatten() {
            l.k = l.k.index_select(rows, 0)?;
            l.v = l.v.index_select(rows, 0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// Appends across the capacity doublings give the concatenation of what was appended, and a
    /// copy taken midway is unaffected by later appends to the original.
    #[test]
    fn appends_equal_concatenation_and_copies_are_independent() -> Result<()> {
        let dev = Device::Cpu;
        let mut cache = KvCache::new(1);
        let (mut all_k, mut all_v) = (Vec::new(), Vec::new());
        let mut copy = None;
        for (step, t) in [50usize, 1, 13, 1, 70, 1].into_iter().enumerate() {
            let k = Tensor::randn(0f32, 1.0, (2, 3, t, 4), &dev)?;
            let v = Tensor::randn(0f32, 1.0, (2, 3, t, 4), &dev)?;
            all_k.push(k.clone());
            all_v.push(v.clone());
            let (ck, cv) = cache.append(0, &k, &v)?;
            let (wk, wv) = (Tensor::cat(&all_k, 2)?, Tensor::cat(&all_v, 2)?);
            assert_eq!(ck.dims(), wk.dims());
            assert_eq!((ck - wk)?.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
            assert_eq!((cv - wv)?.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
            if step == 2 {
                copy = Some((cache.clone(), Tensor::cat(&all_k, 2)?));
            }
        }
        assert_eq!(cache.len(), 136);
        let (mut copy, k_then) = copy.unwrap();
        assert_eq!(copy.len(), 64);
        let one = Tensor::ones((2, 3, 1, 4), DType::F32, &dev)?;
        let (ck, _) = copy.append(0, &one, &one)?;
        let want = Tensor::cat(&[&k_then, &one], 2)?;
        assert_eq!((ck - want)?.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
        Ok(())
    }
}
