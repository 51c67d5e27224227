//! MinHash dedup against datasketch 2.0.0 (tools/fixtures/make_dedup_fixtures.py): the LSH band
//! choice for several thresholds, and which texts are near copies of which (cases far from the
//! threshold, where the decision does not depend on the hash functions).

use graft_data::dedup::{find_duplicates, optimal_bands, Duplicate, MinHashConfig};
use graft_testkit::read_json;

#[test]
fn band_choice_matches_datasketch() {
    let f = read_json("data/dedup.json");
    for case in f["bands"].as_array().unwrap() {
        let t = case["threshold"].as_f64().unwrap();
        let p = case["num_perm"].as_u64().unwrap() as usize;
        let want: (usize, usize) = serde_json::from_value(case["bands_rows"].clone()).unwrap();
        assert_eq!(optimal_bands(t, p), want, "threshold {t}, {p} permutations");
    }
}

#[test]
fn near_duplicates_match_datasketch() {
    let f = read_json("data/dedup.json");
    let rows = f["near"].as_array().unwrap();
    let texts: Vec<String> = rows
        .iter()
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect();
    let got = find_duplicates(&texts, Some(&MinHashConfig::default()));
    for (i, (row, g)) in rows.iter().zip(&got).enumerate() {
        let want: Vec<usize> = serde_json::from_value(row["matches"].clone()).unwrap();
        match (want.first(), g) {
            (None, None) => {}
            (Some(&of), Some(Duplicate::Near { of: got_of, .. })) => {
                assert_eq!(*got_of, of, "text {i}")
            }
            other => panic!("text {i}: datasketch vs graft {other:?}"),
        }
    }
    assert!(got.iter().filter(|g| g.is_some()).count() >= 3);
}
