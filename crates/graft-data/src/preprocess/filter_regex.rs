//! `filter_regex`: keeps the rows whose `field` matches `pattern` (Rust `regex` syntax, searched
//! anywhere in the text) — or, with `drop = true`, drops them.

use super::filter_length::field_text;
use super::{JsonRow, Preprocessor};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    field: String,
    pattern: String,
    #[serde(default)]
    drop: bool,
}

pub struct FilterRegex {
    field: String,
    re: regex::Regex,
    drop: bool,
}

impl FilterRegex {
    pub fn new(p: Params) -> Result<Self, String> {
        let re = regex::Regex::new(&p.pattern).map_err(|e| format!("pattern: {e}"))?;
        Ok(Self {
            field: p.field,
            re,
            drop: p.drop,
        })
    }
}

impl Preprocessor for FilterRegex {
    fn apply(&self, row: JsonRow) -> Result<Vec<JsonRow>, String> {
        let hit = self.re.is_match(&field_text(&row, &self.field)?);
        Ok(if hit != self.drop { vec![row] } else { vec![] })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::row;
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_or_drops_matches() {
        let p = |drop| {
            FilterRegex::new(
                serde_json::from_value(
                    json!({"field": "t", "pattern": r"https?://", "drop": drop}),
                )
                .unwrap(),
            )
            .unwrap()
        };
        let url = row(json!({"t": "see http://x.org"}));
        let plain = row(json!({"t": "no link"}));
        assert_eq!(p(false).apply(url.clone()).unwrap().len(), 1);
        assert_eq!(p(false).apply(plain.clone()).unwrap().len(), 0);
        assert_eq!(p(true).apply(url).unwrap().len(), 0);
        assert_eq!(p(true).apply(plain).unwrap().len(), 1);
        let bad = serde_json::from_value(json!({"field": "t", "pattern": "("})).unwrap();
        assert!(FilterRegex::new(bad).err().unwrap().contains("pattern"));
    }
}
