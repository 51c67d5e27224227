//! Seq2seq decoding on the tiny T5 fixtures equals transformers' `generate` (greedy, and beam
//! search with 3 beams, length_penalty 0.6, early_stopping=True; tools/fixtures/make_t5_fixtures.py).

use candle_core::{DType, Device};
use graft_models::Model;
use graft_models::ModelSource;
use graft_serve::{beam_search, generate, BeamOptions, GenerateOptions};
use graft_testkit::{fixture, read_json};

/// Each fixture input without its padding.
fn inputs(expected: &serde_json::Value) -> Vec<Vec<u32>> {
    let ids: Vec<Vec<u32>> = serde_json::from_value(expected["input_ids"].clone()).unwrap();
    let mask: Vec<Vec<u32>> = serde_json::from_value(expected["attention_mask"].clone()).unwrap();
    ids.iter()
        .zip(&mask)
        .map(|(r, m)| {
            r.iter()
                .zip(m)
                .filter(|(_, &m)| m == 1)
                .map(|(&t, _)| t)
                .collect()
        })
        .collect()
}

/// transformers' output row minus the decoder start token, and graft's padded like it.
fn same_as_reference(got: &[u32], want: &[u32], pad: u32) -> bool {
    let mut got = got.to_vec();
    got.resize(want.len() - 1, pad);
    got == want[1..]
}

#[test]
fn greedy_and_beam_search_match_transformers() {
    for name in ["t5", "t5_v11", "mt5"] {
        let expected = read_json(&format!("models/{name}/expected.json"));
        let source = ModelSource::open(
            &fixture(&format!("models/{name}")),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let model = source.build_model(DType::F32, &Device::Cpu).unwrap();
        let Model::Seq2Seq(t5) = &model else {
            panic!("{name}: not an encoder-decoder")
        };
        let eos = t5.cfg.eos_ids();
        let greedy: Vec<Vec<u32>> = serde_json::from_value(expected["greedy"].clone()).unwrap();
        let beams: Vec<Vec<u32>> = serde_json::from_value(expected["beam3_lp06"].clone()).unwrap();
        for (i, input) in inputs(&expected).iter().enumerate() {
            let opts = GenerateOptions {
                max_new_tokens: 10,
                temperature: 0.0,
                top_p: 1.0,
                seed: 0,
                eos_token_ids: eos.clone(),
            };
            let (got, _) = generate(&model, input, &opts, &Device::Cpu, |_| true).unwrap();
            assert!(
                same_as_reference(&got, &greedy[i], 0),
                "{name} row {i}: greedy {got:?} vs {:?}",
                greedy[i]
            );
            let opts = BeamOptions {
                num_beams: 3,
                length_penalty: 0.6,
                early_stopping: true,
                max_new_tokens: 10,
                eos_token_ids: eos.clone(),
            };
            let (got, _) = beam_search(t5, input, &opts, &Device::Cpu).unwrap();
            assert!(
                same_as_reference(&got, &beams[i], 0),
                "{name} row {i}: beams {got:?} vs {:?}",
                beams[i]
            );
        }
    }
}
