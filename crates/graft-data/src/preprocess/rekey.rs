//! `rekey`: seqio's `rekey` — the row becomes `{new: row[old]}` for each `new = "old"` of
//! `fields`; fields not named are dropped (as seqio drops them). A missing `old` is an error.

use std::collections::BTreeMap;

use super::{JsonRow, Preprocessor};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rekey {
    /// new name → old name
    fields: BTreeMap<String, String>,
}

impl Preprocessor for Rekey {
    fn apply(&self, row: JsonRow) -> Result<Vec<JsonRow>, String> {
        let mut out = JsonRow::new();
        // Clone rather than take: one old field may feed two new ones.
        for (new, old) in &self.fields {
            let v = row
                .get(old)
                .cloned()
                .ok_or(format!("field `{old}`: missing"))?;
            out.insert(new.clone(), v);
        }
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::row;
    use super::*;
    use serde_json::json;

    #[test]
    fn renames_drops_and_duplicates() {
        let r: Rekey = serde_json::from_value(
            json!({"fields": {"inputs": "question", "targets": "answer", "copy": "answer"}}),
        )
        .unwrap();
        let out = r
            .apply(row(json!({"question": "q", "answer": "a", "id": 7})))
            .unwrap();
        assert_eq!(
            out,
            vec![row(json!({"inputs": "q", "targets": "a", "copy": "a"}))]
        );
        assert!(r
            .apply(row(json!({"question": "q"})))
            .unwrap_err()
            .contains("`answer`"));
    }
}
