//! The decoder shared by every family: embeddings → blocks → final norm → LM head, with logits for
//! every position and the KV cache passed in by the caller. What differs between families is data in
//! [`DecoderConfig`], not code paths copied per family.
//!
//! Shapes: B batch, T new positions, C hidden, V vocab.
//! input_ids (B, T) u32 → hidden (B, T, C) → logits (B, T, V).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;
use rand::{rngs::StdRng, SeedableRng};

use crate::config::{BlockKind, DecoderConfig};
pub use crate::layers::attention::Masking;
use crate::layers::fused_block::{fused_block, BlockParams, BlockSpec};
use crate::layers::fused_norm::FusedRmsNorm;
use crate::layers::linear::Linear;
use crate::layers::quant::QuantWeight;
use crate::layers::{
    attention::causal_mask, attention::padded_mask, attention::segment_mask, attention::Attention,
    kv_cache::KvCache, mlp::Mlp, norm::RmsNorm, rope,
};

#[derive(Debug, Clone)]
pub struct Block {
    pub self_attn: Attention,
    pub mlp: Mlp,
    pub input_layernorm: Option<RmsNorm>,
    pub post_attention_layernorm: RmsNorm,
    pub pre_feedforward_layernorm: Option<RmsNorm>,
    pub post_feedforward_layernorm: Option<RmsNorm>,
    kind: BlockKind,
}

impl Block {
    fn new(vb: VarBuilder, cfg: &DecoderConfig) -> Result<Self> {
        let norm =
            |name: &str| RmsNorm::new(vb.pp(name), cfg.hidden_size, cfg.rms_norm_eps, cfg.norm);
        let (input, pre_ff, post_ff) = match cfg.block {
            BlockKind::PreNorm => (true, false, false),
            BlockKind::Sandwich => (true, true, true),
            BlockKind::PostNorm => (false, false, true),
        };
        Ok(Self {
            self_attn: Attention::new(vb.pp("self_attn"), cfg)?,
            mlp: Mlp::new(
                vb.pp("mlp"),
                cfg.hidden_size,
                cfg.intermediate_size,
                cfg.mlp_bias,
                cfg.act,
            )?,
            input_layernorm: if input {
                Some(norm("input_layernorm")?)
            } else {
                None
            },
            post_attention_layernorm: norm("post_attention_layernorm")?,
            pre_feedforward_layernorm: if pre_ff {
                Some(norm("pre_feedforward_layernorm")?)
            } else {
                None
            },
            post_feedforward_layernorm: if post_ff {
                Some(norm("post_feedforward_layernorm")?)
            } else {
                None
            },
            kind: cfg.block,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rng: Option<&Mutex<StdRng>>,
        attn: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let opt = |n: &Option<RmsNorm>, x: &Tensor| match n {
            Some(n) => n.forward(x),
            None => Ok(x.clone()),
        };
        match self.kind {
            BlockKind::PreNorm => {
                let x = (x + attn(&opt(&self.input_layernorm, x)?)?)?;
                &x + self
                    .mlp
                    .forward(&self.post_attention_layernorm.forward(&x)?, rng)?
            }
            BlockKind::Sandwich => {
                let h = self
                    .post_attention_layernorm
                    .forward(&attn(&opt(&self.input_layernorm, x)?)?)?;
                let x = (x + h)?;
                let h = self
                    .mlp
                    .forward(&opt(&self.pre_feedforward_layernorm, &x)?, rng)?;
                &x + opt(&self.post_feedforward_layernorm, &h)?
            }
            BlockKind::PostNorm => {
                let x = (x + self.post_attention_layernorm.forward(&attn(x)?)?)?;
                let h = self.mlp.forward(&x, rng)?;
                &x + opt(&self.post_feedforward_layernorm, &h)?
            }
        }
    }
}

impl Block {
    /// The spec and tensors of fused_block.rs for this block of a configuration it handles
    /// ([`crate::layers::fused_block::handles`]): f32, its projections bare or under plain LoRA,
    /// in a step that declared its trained tensors. Gradients reach the optimizer through the
    /// side store, and only the trained tensors get one: a block with none (the embeddings-only
    /// stage of a new vocabulary) passes its input's gradient on and computes no weight gradient.
    pub fn fused_parts(&self) -> Option<(BlockSpec, BlockParams)> {
        let (ln1, ln2) = (
            self.input_layernorm.as_ref()?,
            &self.post_attention_layernorm,
        );
        let f32_norms = [&ln1.weight, &ln2.weight]
            .iter()
            .all(|w| w.dtype() == DType::F32);
        if !f32_norms {
            return None;
        }
        let ((heads, kv_heads, head_dim, scale), [q, k, v, o]) = self.self_attn.fused_parts()?;
        let params = BlockParams {
            ln1: ln1.weight.clone(),
            q,
            k,
            v,
            o,
            ln2: ln2.weight.clone(),
            gate: self.mlp.gate_proj.fused_proj()?,
            up: self.mlp.up_proj.fused_proj()?,
            down: self.mlp.down_proj.fused_proj()?,
        };
        // Outside a step that declared its trained tensors, candle's backward keeps them all.
        if !crate::layers::side_grads::any_trainable() {
            return None;
        }
        let norm = FusedRmsNorm {
            eps: ln1.eps,
            one_plus: ln1.kind == crate::config::NormKind::OnePlus,
        };
        let spec = BlockSpec {
            act: self.mlp.act,
            heads,
            kv_heads,
            head_dim,
            scale,
            norm,
        };
        Some((spec, params))
    }
}

/// A network that computes the final hidden states in place of the decoder's own layers, from the
/// token embeddings and the (frozen) decoder — Ladder Side-Tuning's side network. Its KV cache
/// layers follow the decoder's in the cache [`Decoder::new_cache`] makes.
pub trait SideNetwork: std::fmt::Debug + Send + Sync {
    fn cache_layers(&self) -> usize;
    fn hidden(
        &self,
        backbone: &Decoder,
        embeds: Tensor,
        positions: &Tensor,
        segments: Option<&Tensor>,
        cache: Option<&mut KvCache>,
        train: bool,
    ) -> Result<Tensor>;
    /// Reseeds the side network's dropout with the decoder's.
    fn set_dropout_seed(&self, _seed: u64) {}
}

#[derive(Debug)]
pub struct Decoder {
    pub cfg: DecoderConfig,
    pub embed_tokens: Tensor,
    pub layers: Vec<std::sync::Arc<Block>>,
    /// Recompute every block's activations in the backward (layers/recompute.rs): activation
    /// checkpointing, the recipe's `[train] checkpointing`.
    pub checkpointing: bool,
    pub norm: RmsNorm,
    /// `None` when the embeddings are tied.
    pub lm_head: Option<Tensor>,
    /// The embeddings and an untied head kept quantized (a GGUF opened with its weights kept as
    /// stored); `embed_tokens` / `lm_head` are then zero-stride placeholders of their shapes.
    pub quantized_embed: Option<Arc<QuantWeight>>,
    pub quantized_head: Option<Arc<QuantWeight>>,
    /// When set, the hidden states come from this side network (the layers above stay frozen).
    pub side: Option<std::sync::Arc<dyn SideNetwork>>,
    /// Distinct rotary tables (usually one; Gemma 3 has a local and a global one) and each layer's index.
    inv_freqs: Vec<Tensor>,
    layer_rope: Vec<usize>,
    /// Draws dropout masks in training forwards; reseeded by the trainer at every micro-step.
    dropout_rng: Mutex<StdRng>,
    /// The configuration the blocks were built from is one fused_block.rs handles.
    fused_block: bool,
}

impl Decoder {
    /// Builds the model from `vb`, whose prefixes equal HF checkpoint keys (`model.layers.0.…`).
    pub fn new(cfg: &DecoderConfig, vb: VarBuilder) -> Result<Self> {
        let m = vb.pp("model");
        let embed_tokens = m.get((cfg.vocab_size, cfg.hidden_size), "embed_tokens.weight")?;
        let layers = (0..cfg.num_hidden_layers())
            .map(|i| Block::new(m.pp(format!("layers.{i}")), cfg).map(std::sync::Arc::new))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(m.pp("norm"), cfg.hidden_size, cfg.rms_norm_eps, cfg.norm)?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(vb.get((cfg.vocab_size, cfg.hidden_size), "lm_head.weight")?)
        };
        let mut distinct: Vec<&Vec<f64>> = Vec::new();
        let mut layer_rope = Vec::new();
        for layer in &cfg.layers {
            let idx = distinct
                .iter()
                .position(|f| **f == layer.rope.inv_freq)
                .unwrap_or_else(|| {
                    distinct.push(&layer.rope.inv_freq);
                    distinct.len() - 1
                });
            layer_rope.push(idx);
        }
        let inv_freqs = distinct
            .iter()
            .map(|f| Tensor::from_iter(f.iter().map(|&x| x as f32), vb.device()))
            .collect::<Result<Vec<_>>>()?;
        let dropout_rng = Mutex::new(StdRng::seed_from_u64(0));
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            checkpointing: false,
            norm,
            lm_head,
            quantized_embed: None,
            quantized_head: None,
            side: None,
            inv_freqs,
            layer_rope,
            dropout_rng,
            fused_block: crate::layers::fused_block::handles(cfg),
        })
    }

    /// Makes the dropout masks of the following training forwards a function of `seed`.
    pub fn set_dropout_seed(&self, seed: u64) {
        if let Ok(mut rng) = self.dropout_rng.lock() {
            *rng = StdRng::seed_from_u64(seed);
        }
        if let Some(side) = &self.side {
            side.set_dropout_seed(seed);
        }
    }

    pub fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    /// Logits (B, T, V) for every position of `input_ids` (B, T), continuing the sequences held in
    /// `cache` if any. Positions count on from the cache length.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        cache: Option<&mut KvCache>,
        train: bool,
    ) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let past = cache.as_ref().map_or(0, |c| c.len());
        let positions = Tensor::arange(past as u32, (past + t) as u32, input_ids.device())?
            .unsqueeze(0)?
            .broadcast_as((b, t))?
            .contiguous()?;
        self.forward_inner(input_ids, &positions, Masking::Causal, cache, train)
    }

    /// Logits (B, V) of the last position only (prefill: the head, the largest product of a
    /// small model with a large vocabulary, runs for one row instead of T). Rows are left-padded
    /// by `pads` (none: `&[]`); positions count from each row's first real token.
    pub fn forward_last(
        &self,
        input_ids: &Tensor,
        pads: &[usize],
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let past = cache.as_ref().map_or(0, |c| c.len());
        let masking = match pads {
            [] => Masking::Causal,
            p if p.len() == b => Masking::Padded(p),
            p => candle_core::bail!("{} padding lengths for {b} rows", p.len()),
        };
        let pos: Vec<u32> = (0..b)
            .flat_map(|r| {
                let pad = pads.get(r).copied().unwrap_or(0);
                (past..past + t).map(move |a| a.saturating_sub(pad) as u32)
            })
            .collect();
        let positions = Tensor::from_vec(pos, (b, t), input_ids.device())?;
        let x = self.hidden_inner(input_ids, &positions, masking, cache, false)?;
        let mut logits = self.head_logits(&x.narrow(1, t - 1, 1)?.squeeze(1)?)?;
        if let Some(cap) = self.cfg.final_softcap {
            logits = ((logits / cap)?.tanh()? * cap)?;
        }
        Ok(logits)
    }

    /// Packed rows: explicit rotary positions (B, T) and segment ids (B, T); a token attends only to
    /// earlier tokens of its own segment (block-diagonal causal mask).
    pub fn forward_packed(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        segments: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        self.forward_inner(input_ids, positions, Masking::Packed(segments), None, train)
    }

    fn forward_inner(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        masking: Masking,
        cache: Option<&mut KvCache>,
        train: bool,
    ) -> Result<Tensor> {
        let x = self.hidden_inner(input_ids, positions, masking, cache, train)?;
        let mut logits = self.head_logits(&x)?;
        if let Some(cap) = self.cfg.final_softcap {
            logits = ((logits / cap)?.tanh()? * cap)?;
        }
        Ok(logits)
    }

    /// The head's quantized weight, when it is kept quantized.
    fn head_quantized(&self) -> Option<&Arc<QuantWeight>> {
        match self.lm_head {
            Some(_) => self.quantized_head.as_ref(),
            None => self.quantized_embed.as_ref(),
        }
    }

    /// The LM head's weight (V, H) as a dense tensor: `lm_head`, or the embeddings when tied
    /// (dequantized when kept quantized).
    pub fn head(&self) -> Result<Tensor> {
        match self.head_quantized() {
            Some(q) => q
                .dequantize(self.embed_tokens.device())?
                .to_dtype(self.dtype()),
            None => Ok(self.lm_head.as_ref().unwrap_or(&self.embed_tokens).clone()),
        }
    }

    /// Logits (…, V) of final hidden states (…, H), before soft-capping; a quantized head is
    /// multiplied as stored.
    pub fn head_logits(&self, x: &Tensor) -> Result<Tensor> {
        match self.head_quantized() {
            Some(q) => crate::layers::quant::quant_matmul(x, q),
            None => crate::layers::linear::matmul_t(
                x,
                self.lm_head.as_ref().unwrap_or(&self.embed_tokens),
            ),
        }
    }

    /// Replaces quantized embeddings and head by dense tensors (before they are trained or
    /// replaced as whole weights).
    fn dequantize_embeddings(&mut self) -> Result<()> {
        if let Some(q) = self.quantized_embed.take() {
            self.embed_tokens = q
                .dequantize(self.embed_tokens.device())?
                .to_dtype(self.dtype())?;
        }
        if let (Some(q), Some(head)) = (self.quantized_head.take(), self.lm_head.as_mut()) {
            *head = q.dequantize(head.device())?.to_dtype(head.dtype())?;
        }
        Ok(())
    }

    /// The final hidden states (B, T, H) after the last norm — what the head turns into logits —
    /// for rows (optionally packed: positions and segments (B, T)).
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        packed: Option<(&Tensor, &Tensor)>,
        train: bool,
    ) -> Result<Tensor> {
        match packed {
            Some((pos, seg)) => {
                self.hidden_inner(input_ids, pos, Masking::Packed(seg), None, train)
            }
            None => {
                let pos = Self::positions(input_ids)?;
                self.hidden_inner(input_ids, &pos, Masking::Causal, None, train)
            }
        }
    }

    fn hidden_inner(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        masking: Masking,
        cache: Option<&mut KvCache>,
        train: bool,
    ) -> Result<Tensor> {
        let x = self.embed(input_ids)?;
        if let Some(side) = &self.side {
            let segments = match masking {
                Masking::Causal => None,
                Masking::Packed(seg) => Some(seg),
                Masking::Padded(_) => {
                    candle_core::bail!("a side network decodes one sequence at a time")
                }
            };
            return side.hidden(self, x, positions, segments, cache, train);
        }
        self.run_layers(x, positions, masking, cache, train, &mut |_, x| Ok(x))
    }

    /// The token embeddings (B, T, H) of `input_ids` (B, T), scaled as the model scales them.
    pub fn embed(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let ids = input_ids.flatten_all()?;
        let rows = match &self.quantized_embed {
            Some(q) => q
                .rows(&ids.to_vec1::<u32>()?, ids.device())?
                .to_dtype(self.dtype())?,
            None => self.embed_tokens.index_select(&ids, 0)?,
        };
        let mut x = rows.reshape((b, t, ()))?;
        if let Some(scale) = self.cfg.embed_scale {
            // transformers multiplies by a tensor of the model dtype: round the scale the same way.
            x = x.broadcast_mul(
                &Tensor::new(scale as f32, input_ids.device())?.to_dtype(self.dtype())?,
            )?;
        }
        Ok(x)
    }

    /// Runs the layers on hidden states `x` (B, T, H), passing each layer's output through
    /// `after(i, output)` (whose result goes on), then the final norm. Ladder side-tuning reads
    /// the backbone's layer outputs and mixes them into its side network through this.
    pub fn run_layers(
        &self,
        mut x: Tensor,
        positions: &Tensor,
        masking: Masking,
        mut cache: Option<&mut KvCache>,
        train: bool,
        after: &mut dyn FnMut(usize, Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let t = x.dim(1)?;
        let dtype = self.dtype();
        let device = x.device().clone();
        let device = &device;
        let past = cache.as_ref().map_or(0, |c| c.len());
        let cos_sin = self
            .inv_freqs
            .iter()
            .map(|f| rope::cos_sin(f, positions, dtype))
            .collect::<Result<Vec<_>>>()?;
        let mut masks: HashMap<Option<usize>, Tensor> = HashMap::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let window = self.cfg.layers[i].sliding_window;
            let mask = match masks.entry(window) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(match masking {
                    Masking::Packed(seg) => segment_mask(seg, window)?,
                    Masking::Causal => causal_mask(t, past, window, device)?,
                    Masking::Padded(pads) => padded_mask(t, past, window, pads, device)?,
                }),
            };
            let (cos, sin) = &cos_sin[self.layer_rope[i]];
            let rng = train.then_some(&self.dropout_rng);
            if self.checkpointing && train && cache.is_none() {
                let (layer, cos, sin, mask) =
                    (layer.clone(), cos.clone(), sin.clone(), mask.clone());
                let run: crate::layers::recompute::BlockFn = std::sync::Arc::new(move |x, rng| {
                    layer.forward(x, rng, |h| {
                        layer.self_attn.forward(h, &cos, &sin, &mask, None, rng)
                    })
                });
                x = crate::layers::recompute::recomputed(&x, run, rng)?;
                x = after(i, x)?;
                continue;
            }
            // A block the fused op handles, in training: one op with a hand-written backward.
            if self.fused_block
                && train
                && cache.is_none()
                && x.dtype() == DType::F32
                && x.device().is_cpu()
            {
                if let Some((spec, w)) = layer.fused_parts() {
                    x = fused_block(&x, spec, w, cos, sin, mask)?;
                    x = after(i, x)?;
                    continue;
                }
            }
            let layer_cache = cache.as_deref_mut().map(|c| (c, i));
            x = layer.forward(&x, rng, |h| {
                layer.self_attn.forward(h, cos, sin, mask, layer_cache, rng)
            })?;
            x = after(i, x)?;
        }
        self.norm.forward(&x)
    }

    /// Positions 0..T for every row of `input_ids` (B, T).
    pub fn positions(input_ids: &Tensor) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        Tensor::arange(0u32, t as u32, input_ids.device())?
            .unsqueeze(0)?
            .broadcast_as((b, t))?
            .contiguous()
    }

    /// log-softmax of [`Self::forward`]'s logits, in f32.
    pub fn log_probs(
        &self,
        input_ids: &Tensor,
        cache: Option<&mut KvCache>,
        train: bool,
    ) -> Result<Tensor> {
        let logits = self
            .forward(input_ids, cache, train)?
            .to_dtype(DType::F32)?;
        candle_nn::ops::log_softmax(&logits, D::Minus1)
    }

    /// Every linear layer with its HF module name (`model.layers.0.self_attn.q_proj`, …), for
    /// adapters to wrap.
    pub fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            // Copies the block only if a checkpointed step still holds it.
            let layer = std::sync::Arc::make_mut(layer);
            let p = format!("model.layers.{i}");
            let a = &mut layer.self_attn;
            out.push((format!("{p}.self_attn.q_proj"), &mut a.q_proj));
            out.push((format!("{p}.self_attn.k_proj"), &mut a.k_proj));
            out.push((format!("{p}.self_attn.v_proj"), &mut a.v_proj));
            out.push((format!("{p}.self_attn.o_proj"), &mut a.o_proj));
            let m = &mut layer.mlp;
            out.push((format!("{p}.mlp.gate_proj"), &mut m.gate_proj));
            out.push((format!("{p}.mlp.up_proj"), &mut m.up_proj));
            out.push((format!("{p}.mlp.down_proj"), &mut m.down_proj));
        }
        out
    }

    pub fn new_cache(&self) -> KvCache {
        let side = self.side.as_ref().map_or(0, |s| s.cache_layers());
        KvCache::new(self.layers.len() + side)
    }
}

/// log p(ids[t] | ids[..t]) for t ≥ 1 of each row: (B, T-1), from log-probs (B, T, V).
pub fn next_token_logprobs(log_probs: &Tensor, input_ids: &Tensor) -> Result<Tensor> {
    let t = input_ids.dim(1)?;
    let lp = log_probs.narrow(1, 0, t - 1)?;
    let targets = input_ids
        .narrow(1, 1, t - 1)?
        .unsqueeze(D::Minus1)?
        .contiguous()?;
    lp.contiguous()?
        .gather(&targets, D::Minus1)?
        .squeeze(D::Minus1)
}

impl crate::layers::linear::Linears for Decoder {
    fn linears_mut(&mut self) -> Vec<(String, &mut crate::layers::linear::Linear)> {
        Decoder::linears_mut(self)
    }

    fn embeddings_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        if let Err(e) = self.dequantize_embeddings() {
            // Only a corrupt quantized tensor fails here; it failed to load for the same reason.
            eprintln!("warning: quantized embeddings: {e}");
        }
        let mut out = vec![("model.embed_tokens".to_string(), &mut self.embed_tokens)];
        if let Some(head) = self.lm_head.as_mut() {
            out.push(("lm_head".to_string(), head));
        }
        out
    }
}
