//! The KV cache is owned by the caller and passed to every forward, so one model can serve several
//! sequences and training never carries hidden state.
//! Shapes: per layer k, v (B, H_kv, S, D) with S the number of cached positions.

use candle_core::{Result, Tensor};

#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |(k, _)| k.dims()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends this step's k, v for `layer` and returns the full k, v to attend over.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let entry = &mut self.layers[layer];
        let (k, v) = match entry.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, k], 2)?, Tensor::cat(&[&pv, v], 2)?),
            None => (k.clone(), v.clone()),
        };
        *entry = Some((k.clone(), v.clone()));
        Ok((k, v))
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
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(rows, 0)?;
            *v = v.index_select(rows, 0)?;
        }
        Ok(())
    }
}
