//! TAPEX table linearization equals transformers' IndexedRowTableLinearize
//! (tools/fixtures/make_table_fixtures.py).

use graft_data::preprocess::Pipeline;
use serde_json::{json, Value};

#[test]
fn tapex_linearization_matches_transformers() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/data/tapex_linearize.json"
    );
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(cases.len(), 4);
    for lowercase in [false, true] {
        let p = Pipeline::new(
            &[json!({"kind": "linearize_table", "into": "text", "lowercase": lowercase})],
            Some(vec!["text".into()]),
        )
        .unwrap();
        for c in &cases {
            let row = json!({"table": c["table"]}).as_object().unwrap().clone();
            let out = p.run(row).unwrap();
            let want = &c[if lowercase { "tapex_lower" } else { "tapex" }];
            assert_eq!(&out[0]["text"], want);
        }
    }
}
