//! `linearize_table`: writes a table `{"header": [...], "rows": [[...], ...]}` (the layout of
//! WikiTableQuestions / WikiSQL / TAPEX data) in `field` as text into `into`:
//! - `tapex` (default): TAPEX's IndexedRowTableLinearize, `col : h1 | h2 row 1 : a | b row 2 : …`
//!   (fixture from transformers 4.46's TapexTokenizer linearizer); `lowercase = true` as the
//!   TAPEX tokenizer lowercases;
//! - `markdown`: a pipe table with a `---` rule under the header, `|` in cells escaped.
//!
//! Numbers are written as JSON writes them, null as an empty cell.

use serde_json::Value;

use super::{JsonRow, Preprocessor};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearizeTable {
    #[serde(default = "table")]
    field: String,
    into: String,
    #[serde(default)]
    style: Style,
    #[serde(default)]
    lowercase: bool,
}

#[derive(serde::Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Style {
    #[default]
    Tapex,
    Markdown,
}

fn table() -> String {
    "table".into()
}

fn cell(v: &Value) -> Result<String, String> {
    Ok(match v {
        Value::String(s) => s.clone(),
        Value::Number(_) | Value::Bool(_) => v.to_string(),
        Value::Null => String::new(),
        _ => return Err("a cell is a list or an object".into()),
    })
}

fn cells(v: &Value, what: &str) -> Result<Vec<String>, String> {
    v.as_array()
        .ok_or(format!("{what}: not a list"))?
        .iter()
        .map(cell)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what}: {e}"))
}

/// (header, rows) of a table value.
fn parse_table(v: &Value) -> Result<(Vec<String>, Vec<Vec<String>>), String> {
    let header = cells(v.get("header").ok_or("no `header`")?, "header")?;
    let rows = v
        .get("rows")
        .ok_or("no `rows`")?
        .as_array()
        .ok_or("rows: not a list")?
        .iter()
        .enumerate()
        .map(|(i, r)| cells(r, &format!("rows[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((header, rows))
}

pub fn tapex(header: &[String], rows: &[Vec<String>]) -> String {
    let mut s = format!("col : {} ", header.join(" | "));
    for (i, r) in rows.iter().enumerate() {
        s.push_str(&format!("row {} : {} ", i + 1, r.join(" | ")));
    }
    s.trim().to_string()
}

pub fn markdown(header: &[String], rows: &[Vec<String>]) -> String {
    let line = |cells: &[String]| {
        let escaped: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
        format!("| {} |", escaped.join(" | "))
    };
    let mut out = vec![line(header), line(&vec!["---".to_string(); header.len()])];
    out.extend(rows.iter().map(|r| line(r)));
    out.join("\n")
}

impl Preprocessor for LinearizeTable {
    fn apply(&self, mut row: JsonRow) -> Result<Vec<JsonRow>, String> {
        let v = row
            .get(&self.field)
            .ok_or(format!("field `{}`: missing", self.field))?;
        let (header, rows) = parse_table(v).map_err(|e| format!("field `{}`: {e}", self.field))?;
        let mut text = match self.style {
            Style::Tapex => tapex(&header, &rows),
            Style::Markdown => markdown(&header, &rows),
        };
        if self.lowercase {
            text = text.to_lowercase();
        }
        row.insert(self.into.clone(), text.into());
        Ok(vec![row])
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::row;
    use super::*;
    use serde_json::json;

    #[test]
    fn markdown_and_bad_tables() {
        let t = json!({"header": ["name", "a|b"], "rows": [["x", 1], [null, 2.5]]});
        let (h, r) = parse_table(&t).unwrap();
        assert_eq!(
            markdown(&h, &r),
            "| name | a\\|b |\n| --- | --- |\n| x | 1 |\n|  | 2.5 |"
        );
        let l: LinearizeTable = serde_json::from_value(json!({"into": "t"})).unwrap();
        let e = l
            .apply(row(
                json!({"table": {"header": ["a"], "rows": [[["nested"]]]}}),
            ))
            .unwrap_err();
        assert!(e.contains("rows[0]") && e.contains("`table`"), "{e}");
        assert!(l
            .apply(row(json!({"x": 1})))
            .unwrap_err()
            .contains("missing"));
    }
}
