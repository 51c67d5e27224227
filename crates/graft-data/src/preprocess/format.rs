//! `format`: sets `field` to `template` with every `{name}` replaced by the row's `name` field
//! (strings as they are, numbers and booleans written out); `{{` and `}}` are literal braces.
//! E.g. `template = "Question: {question}\nAnswer:"`.

use super::{text_field, JsonRow, Preprocessor};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Format {
    field: String,
    template: String,
}

pub(crate) fn fill(template: &str, row: &JsonRow) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
        } else if tail.starts_with('}') {
            return Err(format!(
                "template: unmatched `}}` at byte {}",
                template.len() - tail.len()
            ));
        } else {
            let end = tail.find('}').ok_or(format!(
                "template: unclosed `{{` at byte {}",
                template.len() - tail.len()
            ))?;
            out.push_str(&text_field(row, &tail[1..end])?);
            rest = &tail[end + 1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

impl Preprocessor for Format {
    fn apply(&self, mut row: JsonRow) -> Result<Vec<JsonRow>, String> {
        let s = fill(&self.template, &row)?;
        row.insert(self.field.clone(), s.into());
        Ok(vec![row])
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::row;
    use super::*;
    use serde_json::json;

    #[test]
    fn fills_escapes_and_names_missing_fields() {
        let r = row(json!({"q": "2+2?", "n": 4, "ok": true}));
        assert_eq!(
            fill("Q: {q} {{n}}={n} {ok}", &r).unwrap(),
            "Q: 2+2? {n}=4 true"
        );
        assert!(fill("{missing}", &r).unwrap_err().contains("`missing`"));
        assert!(fill("{q", &r).unwrap_err().contains("unclosed"));
        assert!(fill("q}", &r).unwrap_err().contains("unmatched"));
    }
}
