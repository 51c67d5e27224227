//! The one model type every capability holds: training, evaluation, generation and the CLI take a
//! [`Model`] — decoder-only or encoder-decoder — and use it through [`LanguageModel`]: logits and
//! next-token log-probs of a token stream (conditioned on the encoder input for seq2seq), dropout
//! seeding, and the named linears and embeddings adapters and vocabulary surgery touch. Adding an
//! architecture touches its family file and one registry line; adding a capability needs only
//! this interface (and, for a capability only one architecture has, [`Model::as_decoder`]).
//! Incremental decoding is [`Model::prefill`] then [`Model::step`] over a caller-owned
//! [`DecodeState`].
//!
//! Shapes: ids (B, T) the decoder stream; encoder ids and mask (B, S); packed positions and
//! segments (B, T); logits (B, T, V); next-token log-probs and log-partitions (B, T−1).

use candle_core::{DType, Device, IndexOp, Result, Tensor, D};

use crate::layers::head_logprobs::head_logprobs;
use crate::layers::linear::{Linear, Linears};
use crate::{next_token_logprobs, Decoder, KvCache, T5Cache, T5};

/// A language model of any supported architecture.
pub enum Model {
    Decoder(Decoder),
    /// Encoder-decoder (T5, mT5): the token stream is the decoder's, `[decoder_start] + targets`.
    Seq2Seq(T5),
}

/// Rows as a model reads them.
#[derive(Clone, Copy)]
pub struct ModelInput<'a> {
    /// The token stream (B, T) whose next tokens are predicted.
    pub ids: &'a Tensor,
    /// Seq2seq: the encoder's ids and mask (B, S), 1 for tokens, 0 for padding.
    pub encoder: Option<(&'a Tensor, &'a Tensor)>,
    /// Packed rows (decoders): rotary positions and segment ids (B, T).
    pub packed: Option<(&'a Tensor, &'a Tensor)>,
}

/// What the trainer, eval and the CLI ask of a model, whatever its architecture.
pub trait LanguageModel: Linears {
    fn vocab_size(&self) -> usize;

    /// Makes the dropout masks of the following training forwards a function of `seed`.
    fn set_dropout_seed(&self, seed: u64);

    /// Logits (B, T, V) at every position of `input.ids`.
    fn logits(&self, input: &ModelInput, train: bool) -> Result<Tensor>;

    /// The final hidden states (B, T, H) at every position of `input.ids` — what the LM head
    /// reads (for seq2seq, the decoder's) — for heads of other tasks and distillation.
    fn hidden_states(&self, input: &ModelInput, train: bool) -> Result<Tensor>;

    /// Log-probs of each next token (B, T−1) and, when asked, the log-partition log Σ exp(logits)
    /// at each position, from the full logits' log-softmax.
    fn token_logps(
        &self,
        input: &ModelInput,
        train: bool,
        want_lse: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        softmax_token_logps(&self.logits(input, train)?, input.ids, want_lse)
    }
}

impl LanguageModel for Decoder {
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn set_dropout_seed(&self, seed: u64) {
        Decoder::set_dropout_seed(self, seed)
    }

    fn logits(&self, input: &ModelInput, train: bool) -> Result<Tensor> {
        if input.encoder.is_some() {
            candle_core::bail!("a decoder-only model takes no encoder input");
        }
        match input.packed {
            Some((pos, seg)) => self.forward_packed(input.ids, pos, seg, train),
            None => self.forward(input.ids, None, train),
        }
    }

    fn hidden_states(&self, input: &ModelInput, train: bool) -> Result<Tensor> {
        if input.encoder.is_some() {
            candle_core::bail!("a decoder-only model takes no encoder input");
        }
        Decoder::hidden_states(self, input.ids, input.packed, train)
    }

    /// Without logit soft-capping through the chunked head ([`head_logprobs`]): the (B, T, V)
    /// logits are never held.
    fn token_logps(
        &self,
        input: &ModelInput,
        train: bool,
        want_lse: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        if self.cfg.final_softcap.is_some() || input.encoder.is_some() {
            return softmax_token_logps(&self.logits(input, train)?, input.ids, want_lse);
        }
        let h = self.hidden_states(input.ids, input.packed, train)?;
        head_token_logps(&h, &self.head()?, input.ids, want_lse)
    }
}

impl LanguageModel for T5 {
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn set_dropout_seed(&self, seed: u64) {
        T5::set_dropout_seed(self, seed)
    }

    fn logits(&self, input: &ModelInput, train: bool) -> Result<Tensor> {
        let (enc_ids, enc_mask) = encoder_input(input)?;
        self.forward(enc_ids, Some(enc_mask), input.ids, train)
    }

    fn hidden_states(&self, input: &ModelInput, train: bool) -> Result<Tensor> {
        let (enc_ids, enc_mask) = encoder_input(input)?;
        let enc = self.encode(enc_ids, Some(enc_mask), train)?;
        self.decode_hidden(input.ids, &enc, Some(enc_mask), None, train)
    }
}

/// The encoder's ids and mask of a seq2seq batch (which cannot be packed).
fn encoder_input<'a>(input: &ModelInput<'a>) -> Result<(&'a Tensor, &'a Tensor)> {
    if input.packed.is_some() {
        candle_core::bail!("packing is not supported for encoder-decoder models");
    }
    input.encoder.ok_or_else(|| {
        candle_core::Error::Msg(
            "an encoder-decoder model needs rows with encoder inputs ({\"inputs\", \"targets\"})"
                .into(),
        )
    })
}

/// What incremental decoding of one sequence keeps between calls; the caller owns it.
pub enum DecodeState {
    /// The decoder's KV cache.
    Decoder(KvCache),
    /// The encoder's states (1, S, C) and the decoder's cache (self-attention k/v; cross-attention
    /// k/v computed once).
    Seq2Seq { encoder: Tensor, cache: T5Cache },
}

/// Several sequences of a decoder-only model decoded together: one KV cache with a row per
/// sequence, rows left-padded to a common length.
#[derive(Debug, Clone)]
pub struct BatchState {
    cache: KvCache,
    pads: Vec<usize>,
}

impl BatchState {
    /// Sequences still in the batch.
    pub fn rows(&self) -> usize {
        self.pads.len()
    }

    /// Keeps batch rows `rows`, in that order (finished sequences leave; a row may repeat).
    pub fn keep_rows(&mut self, rows: &[usize], device: &Device) -> Result<()> {
        if let Some(&r) = rows.iter().find(|&&r| r >= self.pads.len()) {
            candle_core::bail!("batch row {r} of {}", self.pads.len());
        }
        let index: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        self.cache.select_rows(&Tensor::new(index, device)?)?;
        self.pads = rows.iter().map(|&r| self.pads[r]).collect();
        Ok(())
    }
}

impl Model {
    /// Starts decoding `prompts` together (decoder-only models): they are left-padded to the
    /// longest and run through in one forward. Returns the state and each row's next-token
    /// logits (B, V).
    pub fn prefill_batch(
        &self,
        prompts: &[&[u32]],
        device: &Device,
    ) -> Result<(BatchState, Tensor)> {
        let Model::Decoder(m) = self else {
            candle_core::bail!("batched decoding needs a decoder-only model");
        };
        let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        if prompts.iter().any(|p| p.is_empty()) {
            candle_core::bail!("a prompt is empty: nothing to continue");
        }
        let pads: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
        let ids: Vec<u32> = prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(0u32, longest - p.len()).chain(p.iter().copied()))
            .collect();
        let ids = Tensor::from_vec(ids, (prompts.len(), longest), device)?;
        let mut cache = m.new_cache();
        let padded = pads.iter().any(|&p| p > 0);
        let logits = m.forward_last(&ids, if padded { &pads } else { &[] }, Some(&mut cache))?;
        Ok((BatchState { cache, pads }, logits))
    }

    /// Feeds each row its next token (one per row, in row order); the logits (B, V) after them.
    pub fn step_batch(
        &self,
        state: &mut BatchState,
        tokens: &[u32],
        device: &Device,
    ) -> Result<Tensor> {
        let Model::Decoder(m) = self else {
            candle_core::bail!("batched decoding needs a decoder-only model");
        };
        if tokens.len() != state.pads.len() {
            candle_core::bail!(
                "{} tokens for a batch of {}",
                tokens.len(),
                state.pads.len()
            );
        }
        let ids = Tensor::new(tokens, device)?.unsqueeze(1)?;
        let padded = state.pads.iter().any(|&p| p > 0);
        let pads = if padded { &state.pads[..] } else { &[] };
        m.forward_last(&ids, pads, Some(&mut state.cache))
    }

    /// Starts decoding one sequence: a decoder runs `prompt` through (prefill); an
    /// encoder-decoder encodes `prompt` and feeds its decoder start token. Returns the state and
    /// the logits (V) of the first token to choose.
    pub fn prefill(&self, prompt: &[u32], device: &Device) -> Result<(DecodeState, Tensor)> {
        if prompt.is_empty() {
            candle_core::bail!("the prompt is empty: nothing to continue");
        }
        let ids = Tensor::new(prompt, device)?.unsqueeze(0)?;
        match self {
            Model::Decoder(m) => {
                let mut cache = m.new_cache();
                let last = m.forward_last(&ids, &[], Some(&mut cache))?.squeeze(0)?;
                Ok((DecodeState::Decoder(cache), last))
            }
            Model::Seq2Seq(m) => {
                let encoder = m.encode(&ids, None, false)?;
                let start = m.cfg.decoder_start_token_id.ok_or_else(|| {
                    candle_core::Error::Msg(
                        "config.json: decoder_start_token_id is missing (T5 checkpoints use 0)"
                            .into(),
                    )
                })?;
                let mut state = DecodeState::Seq2Seq {
                    encoder,
                    cache: T5Cache::new(m.cfg.decoder_layers()),
                };
                let logits = self.step(&mut state, start, device)?;
                Ok((state, logits))
            }
        }
    }

    /// Feeds the chosen `token`; the logits (V) of the next one.
    pub fn step(&self, state: &mut DecodeState, token: u32, device: &Device) -> Result<Tensor> {
        let ids = Tensor::new(&[token], device)?.unsqueeze(0)?;
        let logits = match (self, state) {
            (Model::Decoder(m), DecodeState::Decoder(cache)) => {
                m.forward(&ids, Some(cache), false)?
            }
            (Model::Seq2Seq(m), DecodeState::Seq2Seq { encoder, cache }) => {
                m.decode(&ids, encoder, None, Some(cache), false)?
            }
            _ => candle_core::bail!("a decoding state of another architecture"),
        };
        logits.i((0, 0))
    }

    fn inner(&self) -> &dyn LanguageModel {
        match self {
            Model::Decoder(m) => m,
            Model::Seq2Seq(m) => m,
        }
    }

    fn inner_mut(&mut self) -> &mut dyn LanguageModel {
        match self {
            Model::Decoder(m) => m,
            Model::Seq2Seq(m) => m,
        }
    }

    /// The decoder-only model, for what only decoders do (KV-cached decoding, packing, side
    /// networks, activation checkpointing).
    pub fn as_decoder(&self) -> Option<&Decoder> {
        match self {
            Model::Decoder(m) => Some(m),
            Model::Seq2Seq(_) => None,
        }
    }

    pub fn as_decoder_mut(&mut self) -> Option<&mut Decoder> {
        match self {
            Model::Decoder(m) => Some(m),
            Model::Seq2Seq(_) => None,
        }
    }

    pub fn is_seq2seq(&self) -> bool {
        matches!(self, Model::Seq2Seq(_))
    }
}

impl Linears for Model {
    fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        self.inner_mut().linears_mut()
    }

    fn embeddings_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        self.inner_mut().embeddings_mut()
    }
}

impl LanguageModel for Model {
    fn vocab_size(&self) -> usize {
        self.inner().vocab_size()
    }

    fn set_dropout_seed(&self, seed: u64) {
        self.inner().set_dropout_seed(seed)
    }

    fn logits(&self, input: &ModelInput, train: bool) -> Result<Tensor> {
        self.inner().logits(input, train)
    }

    fn hidden_states(&self, input: &ModelInput, train: bool) -> Result<Tensor> {
        self.inner().hidden_states(input, train)
    }

    fn token_logps(
        &self,
        input: &ModelInput,
        train: bool,
        want_lse: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        self.inner().token_logps(input, train, want_lse)
    }
}

impl From<Decoder> for Model {
    fn from(m: Decoder) -> Self {
        Model::Decoder(m)
    }
}

impl From<T5> for Model {
    fn from(m: T5) -> Self {
        Model::Seq2Seq(m)
    }
}

/// Next-token log-probs (B, T−1) (and log-partitions) from whole logits (B, T, V).
fn softmax_token_logps(
    logits: &Tensor,
    ids: &Tensor,
    want_lse: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let logits = logits.to_dtype(DType::F32)?;
    let lp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let logps = next_token_logprobs(&lp, ids)?;
    // log p = logit − lse, so lse = logit(target) − log p.
    let lse = want_lse
        .then(|| next_token_logprobs(&logits, ids)? - &logps)
        .transpose()?;
    Ok((logps, lse))
}

/// Next-token log-probs (B, T−1) (and log-partitions) from final hidden states (B, T, H) through
/// the chunked head.
fn head_token_logps(
    h: &Tensor,
    head: &Tensor,
    ids: &Tensor,
    want_lse: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let (b, t, hid) = h.dims3()?;
    if t < 2 {
        candle_core::bail!("rows need two or more tokens");
    }
    let h = h.narrow(1, 0, t - 1)?.reshape((b * (t - 1), hid))?;
    let targets: Vec<u32> = ids.narrow(1, 1, t - 1)?.flatten_all()?.to_vec1()?;
    let (lp, lse) = head_logprobs(&h, head, &targets)?;
    let lse = want_lse.then(|| lse.reshape((b, t - 1))).transpose()?;
    Ok((lp.reshape((b, t - 1))?, lse))
}
