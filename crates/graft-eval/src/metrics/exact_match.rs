//! Exact match as lm-eval's `exact_match_hf_evaluate` (the HF `evaluate` metric): options
//! `regexes_to_ignore` (each removed from both strings), `ignore_case`, `ignore_punctuation`
//! (ASCII `string.punctuation` removed), `ignore_numbers` (digits removed), in that order.

use serde_json::{Map, Value};

use super::PUNCTUATION;

pub fn exact_match(
    gold: &str,
    prediction: &str,
    options: &Map<String, Value>,
) -> Result<f64, String> {
    let flag = |k: &str| options.get(k).and_then(Value::as_bool).unwrap_or(false);
    for key in options.keys() {
        if ![
            "ignore_case",
            "ignore_punctuation",
            "ignore_numbers",
            "regexes_to_ignore",
        ]
        .contains(&key.as_str())
        {
            return Err(format!("exact_match: option `{key}` is not supported"));
        }
    }
    let regexes: Vec<fancy_regex::Regex> = match options.get("regexes_to_ignore") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|r| {
                let r = r.as_str().ok_or("regexes_to_ignore: expected strings")?;
                fancy_regex::Regex::new(r).map_err(|e| format!("regexes_to_ignore `{r}`: {e}"))
            })
            .collect::<Result<_, String>>()?,
        Some(_) => return Err("regexes_to_ignore: expected a list".into()),
    };
    let norm = |s: &str| -> Result<String, String> {
        let mut s = s.to_string();
        for re in &regexes {
            // try_: a pattern that backtracks past fancy-regex's limit is an error, not a panic.
            s = re
                .try_replacen(&s, 0, "")
                .map_err(|e| format!("regexes_to_ignore `{}`: {e}", re.as_str()))?
                .to_string();
        }
        if flag("ignore_case") {
            s = s.to_lowercase();
        }
        if flag("ignore_punctuation") {
            s.retain(|c| !PUNCTUATION.contains(c));
        }
        if flag("ignore_numbers") {
            s.retain(|c| !c.is_ascii_digit());
        }
        Ok(s)
    };
    Ok((norm(gold)? == norm(prediction)?) as u8 as f64)
}

#[cfg(test)]
mod tests {
    use graft_testkit::read_json;

    #[test]
    fn a_runaway_backtracking_pattern_is_an_error() {
        // A backreference makes fancy-regex backtrack; (a*)*\1 on a long run of a's exceeds its
        // backtrack limit.
        let opts = serde_json::json!({"regexes_to_ignore": ["(a*)*\\1b"]});
        let text = "a".repeat(64);
        let e = super::exact_match(&text, "x", opts.as_object().unwrap()).unwrap_err();
        assert!(e.contains("regexes_to_ignore"), "{e}");
    }

    #[test]
    fn matches_lm_eval() {
        // tests/fixtures/eval/metrics_reference.json: lm_eval 0.4.13 exact_match_hf_evaluate.
        let r = read_json("eval/metrics_reference.json");
        let cases = r["lm_eval_exact_match"].as_array().unwrap();
        assert!(cases.len() >= 5);
        for c in cases {
            let got = super::exact_match(
                c["references"][0].as_str().unwrap(),
                c["predictions"][0].as_str().unwrap(),
                c["kwargs"].as_object().unwrap(),
            )
            .unwrap();
            assert_eq!(got, c["exact_match"].as_f64().unwrap(), "{c}");
        }
    }
}
