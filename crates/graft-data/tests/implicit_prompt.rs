//! Preference rows without a prompt take it from the responses' common prefix exactly as TRL's
//! maybe_extract_prompt does (tools/fixtures/make_implicit_prompt_fixture.py, TRL 1.16), its
//! Python slicing quirks included.

use graft_data::{parse_row, Row, Turns};
use graft_testkit::read_json;
use serde_json::Value;

fn as_json(t: &Turns) -> Value {
    match t {
        Turns::Text(s) => Value::String(s.clone()),
        Turns::Messages(m) => serde_json::to_value(m).unwrap(),
    }
}

#[test]
fn implicit_prompts_match_trl() {
    let f = read_json("train/implicit_prompt.json");
    for case in f["cases"].as_array().unwrap() {
        let want = &case["expected"];
        let blank = |v: &Value| v.as_str().is_some_and(|s| s.trim().is_empty());
        if blank(&want["chosen"]) || blank(&want["rejected"]) {
            // TRL keeps a whitespace-only response; graft refuses it as empty (its bad-input rule).
            let e = parse_row(case["row"].as_object().unwrap()).unwrap_err();
            assert!(e.contains("empty response"), "{e}");
            continue;
        }
        let row = parse_row(case["row"].as_object().unwrap()).unwrap();
        let Row::Preference {
            prompt,
            chosen,
            rejected,
        } = row
        else {
            panic!("{}: not a preference row", case["row"])
        };
        assert_eq!(as_json(&prompt), want["prompt"], "{}", case["row"]);
        assert_eq!(as_json(&chosen), want["chosen"], "{}", case["row"]);
        assert_eq!(as_json(&rejected), want["rejected"], "{}", case["row"]);
    }
}

#[test]
fn responses_to_different_prompts_are_a_mismatch() {
    let u = |c: &str| serde_json::json!({"role": "user", "content": c});
    let a = |c: &str| serde_json::json!({"role": "assistant", "content": c});
    for row in [
        serde_json::json!({"chosen": [u("What is 2+2?"), a("4")], "rejected": [u("What is 3+3?"), a("5")]}),
        serde_json::json!({"chosen": "Paris is the capital.", "rejected": "London is the capital."}),
    ] {
        let e = parse_row(row.as_object().unwrap()).unwrap_err();
        assert!(e.contains("prompt mismatch"), "{e}");
    }
}
