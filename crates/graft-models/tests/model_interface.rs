//! The one model interface (model.rs) gives the same numbers whichever way it is asked, for a
//! decoder with the chunked head (Llama), one with logit soft-capping (Gemma 2, whole-softmax
//! path) and an encoder-decoder (T5): next-token log-probs equal the logits' log-softmax,
//! the hidden states through the head give the logits, and prefill + step decoding gives the
//! full forward's logits position by position. (The logits themselves are checked against
//! transformers in parity.rs and t5_parity.rs.)

use candle_core::{DType, Device, IndexOp, Tensor, D};
use graft_models::{next_token_logprobs, LanguageModel, Model, ModelInput, ModelSource};
use graft_testkit::{fixture, max_abs_diff};

fn open(name: &str) -> Model {
    let source = ModelSource::open(
        &fixture(&format!("models/{name}")),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    source.build_model(DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn every_view_of_the_model_agrees() {
    let dev = Device::Cpu;
    for name in ["llama", "gemma2", "t5"] {
        let model = open(name);
        let v = model.vocab_size() as u32;
        let prompt: Vec<u32> = (0..6).map(|i| (i * 7 + 3) % v).collect();
        let stream: Vec<u32> = (0..5).map(|i| (i * 5 + 2) % v).collect();
        let enc_ids = Tensor::new(prompt.as_slice(), &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let enc_mask = enc_ids.ones_like().unwrap();
        // A decoder continues the prompt; T5 decodes `[start] + stream` after encoding it.
        let (ids, encoder) = match &model {
            Model::Decoder(_) => ([prompt.clone(), stream.clone()].concat(), None),
            Model::Seq2Seq(t5) => {
                let start = t5.cfg.decoder_start_token_id.unwrap();
                (
                    [vec![start], stream.clone()].concat(),
                    Some((&enc_ids, &enc_mask)),
                )
            }
        };
        let ids_t = Tensor::new(ids.as_slice(), &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let input = ModelInput {
            ids: &ids_t,
            encoder,
            packed: None,
        };
        let logits = model.logits(&input, false).unwrap();

        let lp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
        let want = next_token_logprobs(&lp, &ids_t).unwrap();
        let (got, lse) = model.token_logps(&input, false, true).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-5, "{name}: token log-probs");
        let want_lse = logits.exp().unwrap().sum(D::Minus1).unwrap().log().unwrap();
        let want_lse = want_lse.narrow(1, 0, ids.len() - 1).unwrap();
        assert!(
            max_abs_diff(&lse.unwrap(), &want_lse) < 1e-4,
            "{name}: log-partitions"
        );

        let h = model.hidden_states(&input, false).unwrap();
        let from_hidden = match &model {
            Model::Decoder(d) if d.cfg.final_softcap.is_none() => {
                Some(h.broadcast_matmul(&d.head().unwrap().t().unwrap()).unwrap())
            }
            Model::Decoder(_) => None,
            Model::Seq2Seq(t5) => {
                let scale = (t5.cfg.d_model as f64).powf(-0.5);
                let head = t5.lm_head.as_ref().unwrap_or(&t5.shared);
                let h = if t5.cfg.scales_output() {
                    (h * scale).unwrap()
                } else {
                    h
                };
                Some(h.broadcast_matmul(&head.t().unwrap()).unwrap())
            }
        };
        if let Some(l) = from_hidden {
            assert!(
                max_abs_diff(&l, &logits) < 1e-4,
                "{name}: head(hidden) = logits"
            );
        }

        // Prefill + steps: the logits of each next position.
        let (mut state, mut next) = model.prefill(&prompt, &dev).unwrap();
        let first = match &model {
            Model::Decoder(_) => prompt.len() - 1,
            Model::Seq2Seq(_) => 0,
        };
        for (k, &token) in stream.iter().enumerate() {
            let want = logits.i((0, first + k)).unwrap();
            assert!(max_abs_diff(&next, &want) < 1e-4, "{name}: step {k}");
            next = model.step(&mut state, token, &dev).unwrap();
        }
    }
}
