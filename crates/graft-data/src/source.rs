//! Row sources: JSONL (one JSON object per line) and Parquet (one row per record, nested lists and
//! structs as JSON arrays and objects, as `datasets` writes TRL data). Rows come with their 1-based
//! line (JSONL) or row (Parquet) number for error messages.

use std::io::BufRead;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::{Map, Value};

/// A row and its 1-based line (JSONL) or row (Parquet) number.
pub type NumberedRow = (usize, Map<String, Value>);

/// Rows of `path` by its extension (`.parquet`, else JSONL). Errors name the file and line/row.
pub fn read_rows(path: &Path) -> Result<Vec<NumberedRow>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
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

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("graft-source-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
