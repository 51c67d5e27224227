//! `filter_length`: keeps rows whose `field` has between `min_*` and `max_*` characters (Unicode
//! scalar values) and words (whitespace-separated), bounds inclusive; unset bounds are open.

use serde_json::Value;

use super::{JsonRow, Preprocessor};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterLength {
    field: String,
    min_chars: Option<usize>,
    max_chars: Option<usize>,
    min_words: Option<usize>,
    max_words: Option<usize>,
}

/// The text of a string field, or of a `messages`-style list (every `content` joined).
pub(crate) fn field_text(row: &JsonRow, field: &str) -> Result<String, String> {
    match row.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v @ Value::Array(_)) => Ok(crate::decontaminate::content_text(v)),
        Some(_) => Err(format!("field `{field}`: not text")),
        None => Err(format!("field `{field}`: missing")),
    }
}

impl Preprocessor for FilterLength {
    fn apply(&self, row: JsonRow) -> Result<Vec<JsonRow>, String> {
        let text = field_text(&row, &self.field)?;
        let chars = text.chars().count();
        let words = text.split_whitespace().count();
        let within = |n: usize, lo: Option<usize>, hi: Option<usize>| {
            lo.is_none_or(|lo| n >= lo) && hi.is_none_or(|hi| n <= hi)
        };
        let keep = within(chars, self.min_chars, self.max_chars)
            && within(words, self.min_words, self.max_words);
        Ok(if keep { vec![row] } else { vec![] })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::row;
    use super::*;
    use serde_json::json;

    #[test]
    fn bounds_are_inclusive() {
        let f: FilterLength =
            serde_json::from_value(json!({"field": "t", "min_chars": 3, "max_words": 2})).unwrap();
        let keeps = |t: &str| !f.apply(row(json!({ "t": t }))).unwrap().is_empty();
        assert!(keeps("àbc"));
        assert!(!keeps("ab"));
        assert!(keeps("one two"));
        assert!(!keeps("one two three"));
        assert!(f.apply(row(json!({"x": 1}))).is_err());
    }
}
