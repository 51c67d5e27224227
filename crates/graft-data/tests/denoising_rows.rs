//! Denoising rows: the same (inputs, targets) pairs become seq2seq rows for T5 and causal-LM rows
//! (inputs then targets, loss on the targets only) for decoders.

use graft_data::rows::denoising::{denoising_rows, Denoising};
use graft_models::Tokenizer;
use graft_testkit::fixture;

#[test]
fn seq2seq_and_causal_forms_carry_the_same_pairs() {
    let tok = Tokenizer::from_hf_dir(&fixture("models/t5")).unwrap();
    let dir = std::env::temp_dir().join(format!("graft-denoise-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("text.txt");
    std::fs::write(
        &path,
        "The family of Dashwood had long been settled in Sussex.\n\nTheir estate was large.\n",
    )
    .unwrap();
    for cfg in [
        Denoising::Span(&Default::default()),
        Denoising::Ul2(&Default::default()),
    ] {
        let s2s =
            denoising_rows(&path, &tok, 1, 24, &cfg, Some(0), 5, &Default::default()).unwrap();
        let causal =
            denoising_rows(&path, &tok, 1, 24, &cfg, None, 5, &Default::default()).unwrap();
        assert_eq!(s2s.len(), causal.len());
        for (a, b) in s2s.iter().zip(&causal) {
            let inputs = a.encoder_ids.as_ref().unwrap();
            assert!(inputs.len() <= 24);
            assert_eq!(a.input_ids[0], 0, "decoder start");
            let targets = &a.input_ids[1..];
            assert_eq!(b.input_ids, [inputs.as_slice(), targets].concat());
            let loss_positions: Vec<bool> =
                (0..b.input_ids.len()).map(|i| i >= inputs.len()).collect();
            assert_eq!(b.targets, loss_positions, "loss on the targets only");
            assert!(b.encoder_ids.is_none());
            assert_eq!(*inputs.last().unwrap(), 1);
            assert_eq!(*targets.last().unwrap(), 1);
        }
    }
}
