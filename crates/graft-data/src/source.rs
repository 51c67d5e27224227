//! Row sources: JSONL (one JSON object per line), Parquet (one row per record, nested lists and
//! structs as JSON arrays and objects, as `datasets` writes TRL data) and plain text (`.txt`: one
//! `{"text"}` row per paragraph, paragraphs separated by blank lines). Rows come with their 1-based
//! line (JSONL, text: the paragraph's first line) or row (Parquet) number for error messages.

use std::io::BufRead;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::{Map, Value};

/// A row and its 1-based line (JSONL) or row (Parquet) number.
pub type NumberedRow = (usize, Map<String, Value>);

/// Rows of `path` by its extension (`.parquet`, `.txt`, else JSONL). Errors name the file and
/// line/row.
pub fn read_rows(path: &Path) -> Result<Vec<NumberedRow>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if path.extension().is_some_and(|e| e == "txt") {
        return text_paragraphs(file, path);
    }
    if path.extension().is_some_and(|e| e == "parquet") {
        let reader = SerializedFileReader::new(file)
            .map_err(|e| format!("{}: not a readable Parquet file: {e}", path.display()))?;
        let rows = reader
            .get_row_iter(None)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        return rows
            .enumerate()
            .map(|(i, row)| {
                let row = row.map_err(|e| format!("{} row {}: {e}", path.display(), i + 1))?;
                match row.to_json_value() {
                    Value::Object(o) => Ok((i + 1, o)),
                    _ => Err(format!("{} row {}: not a record", path.display(), i + 1)),
                }
            })
            .collect();
    }
    let mut rows = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| format!("{}:{n}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(Value::Object(o)) => rows.push((n, o)),
            Ok(_) => return Err(format!("{}:{n}: expected a JSON object", path.display())),
            Err(e) => return Err(format!("{}:{n}: invalid JSON: {e}", path.display())),
        }
    }
    Ok(rows)
}

/// One `{"text"}` row per paragraph (lines joined by a space; blank lines separate paragraphs).
fn text_paragraphs(file: std::fs::File, path: &Path) -> Result<Vec<NumberedRow>, String> {
    let mut rows = Vec::new();
    let mut para: Vec<String> = Vec::new();
    let mut first = 0;
    let mut flush = |para: &mut Vec<String>, first: usize| {
        if !para.is_empty() {
            let mut row = Map::new();
            row.insert("text".into(), Value::String(para.join(" ")));
            rows.push((first, row));
            para.clear();
        }
    };
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        let line = line.trim();
        if line.is_empty() {
            flush(&mut para, first);
        } else {
            if para.is_empty() {
                first = i + 1;
            }
            para.push(line.to_string());
        }
    }
    flush(&mut para, first);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use graft_testkit::fixture;

    #[test]
    fn parquet_rows_equal_their_jsonl() {
        let p = read_rows(&fixture("data/chat.parquet")).unwrap();
        let j = read_rows(&fixture("data/chat.jsonl")).unwrap();
        assert_eq!(p, j);
        let t = read_rows(&fixture("data/text.parquet")).unwrap();
        assert_eq!(t[1].1["text"], "jumps over the lazy dog.");
        assert_eq!(t[1].1["score"], Value::Null);
    }

    #[test]
    fn corrupt_parquet_is_named() {
        let dir = tempfile_dir();
        let path = dir.join("bad.parquet");
        std::fs::write(&path, b"PAR1 not really PAR1").unwrap();
        let e = read_rows(&path).unwrap_err();
        assert!(e.contains("bad.parquet") && e.contains("Parquet"), "{e}");
    }

    #[test]
    fn text_files_give_one_row_per_paragraph() {
        let dir = tempfile_dir();
        let path = dir.join("t.txt");
        std::fs::write(&path, "Title\n\nFirst line\nsecond line.\n\n\nLast.\n").unwrap();
        let rows = read_rows(&path).unwrap();
        let texts: Vec<(usize, &str)> = rows
            .iter()
            .map(|(n, r)| (*n, r["text"].as_str().unwrap()))
            .collect();
        assert_eq!(
            texts,
            [(1, "Title"), (3, "First line second line."), (7, "Last.")]
        );
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("graft-source-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
