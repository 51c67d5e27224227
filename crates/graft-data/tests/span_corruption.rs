//! T5 span corruption against t5 0.9.4 / seqio 0.0.20 under TensorFlow 2.21
//! (tools/fixtures/make_span_corruption_fixtures.py): random_spans_helper lengths, sentinel
//! substitution on fixed masks, and the counts and structure of random_spans_noise_mask's masks
//! (the random draws themselves come from TF's Philox RNG and are not reproduced).

use graft_data::span_corruption::{
    noise_mask, noise_span_to_unique_sentinel, nonnoise_span_to_unique_sentinel,
    random_spans_helper, SpanCorruption,
};
use graft_testkit::read_json;

fn usizes(v: &serde_json::Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn helper_lengths_match_t5() {
    let f = read_json("data/span_corruption.json");
    for case in f["helper"].as_array().unwrap() {
        let got = random_spans_helper(
            case["inputs_length"].as_u64().unwrap() as usize,
            case["noise_density"].as_f64().unwrap(),
            case["mean_noise_span_length"].as_f64().unwrap(),
        );
        let want = (
            case["tokens_length"].as_u64().unwrap() as usize,
            case["targets_length"].as_u64().unwrap() as usize,
        );
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn sentinels_match_t5() {
    let f = read_json("data/span_corruption.json");
    for case in f["sentinels"].as_array().unwrap() {
        let tokens = usizes(&case["tokens"]);
        let mask: Vec<bool> = usizes(&case["noise_mask"])
            .iter()
            .map(|&m| m == 1)
            .collect();
        assert_eq!(
            noise_span_to_unique_sentinel(&tokens, &mask, 99),
            usizes(&case["noise_span_to_unique_sentinel"]),
            "{}: inputs",
            case["name"]
        );
        assert_eq!(
            nonnoise_span_to_unique_sentinel(&tokens, &mask, 99),
            usizes(&case["nonnoise_span_to_unique_sentinel"]),
            "{}: targets",
            case["name"]
        );
    }
}

fn runs(mask: &[bool], value: bool) -> usize {
    (0..mask.len())
        .filter(|&i| mask[i] == value && (i == 0 || mask[i - 1] != value))
        .count()
}

#[test]
fn noise_masks_have_t5s_counts_and_structure() {
    let f = read_json("data/span_corruption.json");
    for case in f["mask_stats"].as_array().unwrap() {
        let length = case["length"].as_u64().unwrap() as usize;
        let cfg = SpanCorruption {
            noise_density: case["noise_density"].as_f64().unwrap(),
            mean_noise_span_length: case["mean_noise_span_length"].as_f64().unwrap(),
        };
        for seed in 0..5 {
            let m = noise_mask(length, &cfg, seed);
            assert_eq!(m.len(), length);
            let what = format!("length {length}, {cfg:?}, seed {seed}");
            assert_eq!(
                m.iter().filter(|&&x| x).count() as u64,
                case["num_noise_tokens"].as_u64().unwrap(),
                "{what}"
            );
            assert_eq!(
                runs(&m, true) as u64,
                case["num_noise_spans"].as_u64().unwrap(),
                "{what}"
            );
            assert_eq!(
                runs(&m, false) as u64,
                case["num_nonnoise_spans"].as_u64().unwrap(),
                "{what}"
            );
            assert_eq!(
                m.first().copied().unwrap_or(false),
                case["first_is_noise"].as_bool().unwrap(),
                "{what}"
            );
            assert_eq!(
                m.last().copied().unwrap_or(false),
                case["last_is_noise"].as_bool().unwrap(),
                "{what}"
            );
        }
    }
}
