//! Row sources: JSONL (one JSON object per line; also `.jsonl.gz` / `.jsonl.zst`, decompressed as
//! they stream), Parquet (one row per record, nested lists and structs as JSON arrays and objects,
//! as `datasets` writes TRL data) and plain text (`.txt`, `.txt.gz`, `.txt.zst`: one `{"text"}` row
//! per paragraph, paragraphs separated by blank lines). Rows stream one at a time ([`rows_iter`]);
//! a shard (index, count) keeps every count-th row for multi-process training; a folder is read
//! as its files in name order. Rows come with their
//! 1-based line (JSONL, text: the paragraph's first line) or row (Parquet) number for errors.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::{Map, Value};

/// A row and its 1-based line (JSONL) or row (Parquet) number.
pub type NumberedRow = (usize, Map<String, Value>);

type Rows = Box<dyn Iterator<Item = Result<NumberedRow, String>>>;

/// The file's bytes, decompressed by its last extension (`.gz`, `.zst`); and the name without it.
fn open_stream(path: &Path) -> Result<(Box<dyn Read>, String), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if let Some(inner) = name.strip_suffix(".gz") {
        return Ok((
            Box::new(flate2::read::MultiGzDecoder::new(file)),
            inner.to_string(),
        ));
    }
    if let Some(inner) = name.strip_suffix(".zst") {
        let d = ruzstd::decoding::StreamingDecoder::new(file)
            .map_err(|e| format!("{}: not a zstd stream: {e}", path.display()))?;
        return Ok((Box::new(d), inner.to_string()));
    }
    Ok((Box::new(file), name))
}

/// Rows of `path`, streamed, by its extension (`.parquet`, `.txt[.gz|.zst]`, else JSONL
/// `[.gz|.zst]`). Errors name the file and line/row.
pub fn rows_iter(path: &Path) -> Result<Rows, String> {
    let shown = path.display().to_string();
    if path.is_dir() {
        // A folder: its files in name order (hidden files skipped), one after another.
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{shown}: {e}"))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(format!("{shown}: the folder holds no files"));
        }
        let mut all: Rows = Box::new(std::iter::empty());
        for f in files {
            all = Box::new(all.chain(rows_iter(&f)?));
        }
        return Ok(all);
    }
    if path.extension().is_some_and(|e| e == "parquet") {
        // The parquet crate asserts on some damaged files: a panic there is an error here.
        let rows = graft_models::guard::catch("the Parquet reader", || parquet_rows(path, &shown))
            .map_err(|e| format!("{shown}: not a readable Parquet file: {e}"))??;
        return Ok(Box::new(rows.into_iter()));
    }
    let (stream, inner_name) = open_stream(path)?;
    if inner_name.ends_with(".json") {
        if let Some(rows) = json_array(path, &shown)? {
            return Ok(Box::new(rows.into_iter()));
        }
    }
    let lines = CappedLines::new(BufReader::new(stream), MAX_LINE)
        .enumerate()
        .map(move |(i, l)| (i + 1, l));
    if inner_name.ends_with(".txt") {
        return Ok(Box::new(TextParagraphs {
            lines: Box::new(lines),
            shown,
            para: Vec::new(),
            first: 0,
            done: false,
        }));
    }
    Ok(Box::new(lines.filter_map(move |(n, line)| {
        let line = match line {
            Ok(l) => l,
            Err(e) => return Some(Err(format!("{shown}:{n}: {e}"))),
        };
        if line.trim().is_empty() {
            return None;
        }
        Some(match serde_json::from_str(&line) {
            Ok(Value::Object(o)) => Ok((n, o)),
            Ok(_) => Err(format!("{shown}:{n}: expected a JSON object")),
            Err(e) => Err(format!("{shown}:{n}: invalid JSON: {e}")),
        })
    })))
}

/// A `.json` file that holds one JSON array of objects (as `datasets`' json loader also reads),
/// numbered by position; `None` when the file is JSON Lines instead.
fn json_array(
    path: &Path,
    shown: &str,
) -> Result<Option<Vec<Result<NumberedRow, String>>>, String> {
    let (stream, _) = open_stream(path)?;
    let mut reader = BufReader::new(stream);
    let first = loop {
        let buf = reader.fill_buf().map_err(|e| format!("{shown}: {e}"))?;
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => break buf[i],
            None if buf.is_empty() => return Ok(None),
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    };
    if first != b'[' {
        return Ok(None);
    }
    // Read whole (an array cannot stream here), within the same cap as a JSONL line.
    let mut text = String::new();
    reader
        .take(MAX_ARRAY as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{shown}: {e}"))?;
    if text.len() > MAX_ARRAY {
        return Err(format!(
            "{shown}: a JSON array over {} MiB; use JSON Lines",
            MAX_ARRAY >> 20
        ));
    }
    let items: Vec<Value> =
        serde_json::from_str(&text).map_err(|e| format!("{shown}: invalid JSON: {e}"))?;
    Ok(Some(
        items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(o) => Ok((i + 1, o)),
                _ => Err(format!("{shown}: item {}: expected a JSON object", i + 1)),
            })
            .collect(),
    ))
}

/// The largest JSON-array file read (bytes).
const MAX_ARRAY: usize = 1 << 30;

/// Every row of a Parquet file, up to and including the first error.
fn parquet_rows(path: &Path, shown: &str) -> Result<Vec<Result<NumberedRow, String>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?;
    let len = data.len() as u64;
    let file = Budgeted::new(data);
    let reader =
        graft_models::guard::catch("the Parquet footer", || SerializedFileReader::new(file))
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| format!("{shown}: not a readable Parquet file: {e}"))?;
    // A corrupt footer can declare billions of rows that decode from nothing: rows of text
    // take bytes, so more rows than 64 per byte of file is corruption, not data.
    let declared = reader.metadata().file_metadata().num_rows();
    let groups: i64 = reader
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows().max(0))
        .sum();
    let row_groups = reader.metadata().num_row_groups() as u64;
    if declared < 0
        || declared as u64 > len.saturating_mul(64)
        || groups as u64 > len.saturating_mul(64)
        || row_groups > len
    {
        return Err(format!(
            "{shown}: corrupt Parquet footer: {declared} rows in {row_groups} row groups, {len} bytes"
        ));
    }
    let rows: Vec<_> = reader
        .get_row_iter(None)
        .map_err(|e| format!("{shown}: {e}"))?
        .enumerate()
        .map(|(i, row)| {
            let row = row.map_err(|e| format!("{shown} row {}: {e}", i + 1))?;
            match row.to_json_value() {
                Value::Object(o) => Ok((i + 1, o)),
                _ => Err(format!("{shown} row {}: not a record", i + 1)),
            }
        })
        // The first error ends the file: the parquet crate's row iterator can repeat an
        // error forever on a damaged page.
        .scan(false, |failed, row| {
            let stop = *failed;
            *failed |= row.is_err();
            (!stop).then_some(row)
        })
        .collect();
    Ok(rows)
}

/// A Parquet file in memory, read through a work budget: the parquet crate trusts the sizes in
/// a file, so a damaged one can ask for a buffer of any size or re-read pages without end.
/// Reads past the file are errors, and once the bytes handed out pass 64 times the file (plus
/// 64 MiB), every read fails, which ends such a loop with an error.
struct Budgeted {
    data: bytes::Bytes,
    left: std::sync::atomic::AtomicU64,
}

impl Budgeted {
    fn new(data: Vec<u8>) -> Self {
        let budget = (data.len() as u64).saturating_mul(64) + (64 << 20);
        Budgeted {
            data: data.into(),
            left: budget.into(),
        }
    }

    fn charge(&self, n: u64) -> parquet::errors::Result<()> {
        use std::sync::atomic::Ordering;
        let ok = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(n))
            .is_ok();
        match ok {
            true => Ok(()),
            false => Err(parquet::errors::ParquetError::General(
                "the file asks for far more reading than its size allows (corrupt)".into(),
            )),
        }
    }

    fn range(&self, start: u64, length: u64) -> parquet::errors::Result<std::ops::Range<usize>> {
        match start.checked_add(length) {
            Some(end) if end <= self.data.len() as u64 => Ok(start as usize..end as usize),
            _ => Err(parquet::errors::ParquetError::EOF(format!(
                "bytes {start}+{length} are past the end of the file ({})",
                self.data.len()
            ))),
        }
    }
}

impl parquet::file::reader::Length for Budgeted {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
}

impl parquet::file::reader::ChunkReader for Budgeted {
    type T = std::io::Cursor<bytes::Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let r = self.range(start, 0)?;
        // Each reader may read to the end; charge a page's worth per call.
        self.charge(4096)?;
        Ok(std::io::Cursor::new(self.data.slice(r.start..)))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        let r = self.range(start, length as u64)?;
        self.charge(length as u64)?;
        Ok(self.data.slice(r))
    }
}

/// The longest line read (64 MiB): a compressed file that inflates to gigabytes without a
/// newline stops here instead of growing one string until memory runs out.
pub const MAX_LINE: usize = 64 << 20;

/// `BufRead::lines` with a length cap; ends after the first error.
pub struct CappedLines<R> {
    reader: R,
    cap: usize,
    done: bool,
}

impl<R: BufRead> CappedLines<R> {
    pub fn new(reader: R, cap: usize) -> Self {
        CappedLines {
            reader,
            cap,
            done: false,
        }
    }
}

impl<R: BufRead> Iterator for CappedLines<R> {
    type Item = std::io::Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut buf = Vec::new();
        let limit = self.cap as u64 + 1;
        let read = (&mut self.reader).take(limit).read_until(b'\n', &mut buf);
        let result = match read {
            Ok(0) => {
                self.done = true;
                return None;
            }
            Ok(_) if buf.len() > self.cap && buf.last() != Some(&b'\n') => Err(
                std::io::Error::other(format!("a line longer than {} MiB", self.cap >> 20)),
            ),
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
                String::from_utf8(buf).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "the line is not UTF-8")
                })
            }
            Err(e) => Err(e),
        };
        self.done = result.is_err();
        Some(result)
    }
}

/// Every row of `path` (see [`rows_iter`]); the first error stops the read.
pub fn read_rows(path: &Path) -> Result<Vec<NumberedRow>, String> {
    rows_iter(path)?.collect()
}

/// Shard `index` of `count`: every `count`-th row starting at row `index` (0-based), streamed.
pub fn read_shard(path: &Path, index: usize, count: usize) -> Result<Vec<NumberedRow>, String> {
    if count == 0 || index >= count {
        return Err(format!(
            "{}: shard {index} of {count} does not exist",
            path.display()
        ));
    }
    rows_iter(path)?
        .enumerate()
        .filter(|(i, _)| i % count == index)
        .map(|(_, r)| r)
        .collect()
}

/// `{"text"}` rows, one per paragraph (lines joined by a space; blank lines separate paragraphs).
struct TextParagraphs {
    lines: Box<dyn Iterator<Item = (usize, std::io::Result<String>)>>,
    shown: String,
    para: Vec<String>,
    first: usize,
    done: bool,
}

impl TextParagraphs {
    fn flush(&mut self) -> Option<Result<NumberedRow, String>> {
        if self.para.is_empty() {
            return None;
        }
        let mut row = Map::new();
        row.insert("text".into(), Value::String(self.para.join(" ")));
        self.para.clear();
        Some(Ok((self.first, row)))
    }
}

impl Iterator for TextParagraphs {
    type Item = Result<NumberedRow, String>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            match self.lines.next() {
                None => {
                    self.done = true;
                    return self.flush();
                }
                Some((n, Err(e))) => return Some(Err(format!("{}:{n}: {e}", self.shown))),
                Some((n, Ok(line))) => {
                    let line = line.trim();
                    if line.is_empty() {
                        if let Some(row) = self.flush() {
                            return Some(row);
                        }
                    } else {
                        if self.para.is_empty() {
                            self.first = n;
                        }
                        self.para.push(line.to_string());
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graft_testkit::fixture;

    #[test]
    fn a_json_file_may_hold_an_array_or_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (array, lines, bad) = (
            dir.path().join("a.json"),
            dir.path().join("l.json"),
            dir.path().join("b.json"),
        );
        std::fs::write(&array, " \n[{\"q\": \"x\"},\n {\"q\": \"y\"}]\n").unwrap();
        std::fs::write(&lines, "{\"q\": \"x\"}\n{\"q\": \"y\"}\n").unwrap();
        std::fs::write(&bad, "[{\"q\": 1}, 2]").unwrap();
        assert_eq!(read_rows(&array).unwrap(), read_rows(&lines).unwrap());
        let e = read_rows(&bad).unwrap_err();
        assert!(e.contains("b.json") && e.contains("item 2"), "{e}");
    }

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
    fn a_gzip_bomb_without_newlines_stops_at_the_line_cap() {
        use std::io::Write;
        let dir = tempfile_dir();
        let path = dir.join("bomb.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        gz.write_all(b"{\"text\": \"ok\"}\n").unwrap();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..(MAX_LINE >> 20) + 1 {
            gz.write_all(&chunk).unwrap();
        }
        gz.finish().unwrap();
        let mut rows = rows_iter(&path).unwrap();
        assert_eq!(rows.next().unwrap().unwrap().1["text"], "ok");
        let e = rows.next().unwrap().unwrap_err();
        assert!(
            e.contains("bomb.jsonl.gz:2") && e.contains("longer than 64 MiB"),
            "{e}"
        );
        assert!(rows.next().is_none());
        // CRLF and a last line without a newline read as `lines()` reads them.
        let lines: Vec<String> = CappedLines::new(&b"a\r\nb\n\nc"[..], 8)
            .map(Result::unwrap)
            .collect();
        assert_eq!(lines, ["a", "b", "", "c"]);
        let e = CappedLines::new(&b"0123456789\n"[..], 4)
            .next()
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("longer"));
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

    #[test]
    fn compressed_jsonl_and_text_stream_like_plain_files() {
        use std::io::Write;
        let dir = tempfile_dir();
        let plain = fixture("data/chat.jsonl");
        let bytes = std::fs::read(&plain).unwrap();
        let gz = dir.join("chat.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&bytes).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert_eq!(read_rows(&gz).unwrap(), read_rows(&plain).unwrap());
        let zst = dir.join("chat.jsonl.zst");
        let packed = ruzstd::encoding::compress_to_vec(
            &bytes[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        std::fs::write(&zst, packed).unwrap();
        assert_eq!(read_rows(&zst).unwrap(), read_rows(&plain).unwrap());
        let txt = dir.join("p.txt.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"a b\nc\n\nd\n").unwrap();
        std::fs::write(&txt, enc.finish().unwrap()).unwrap();
        let rows = read_rows(&txt).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1["text"], "a b c");
        // Shards partition the rows.
        let all = read_rows(&plain).unwrap();
        let (s0, s1) = (
            read_shard(&plain, 0, 2).unwrap(),
            read_shard(&plain, 1, 2).unwrap(),
        );
        assert_eq!(s0.len() + s1.len(), all.len());
        assert_eq!(s0[0], all[0]);
        assert_eq!(s1[0], all[1]);
        assert!(read_shard(&plain, 2, 2).is_err());
        let bad = dir.join("bad.jsonl.zst");
        std::fs::write(&bad, b"not zstd at all").unwrap();
        assert!(read_rows(&bad).err().unwrap().contains("bad.jsonl.zst"));
    }

    #[test]
    fn folders_read_their_files_in_order() {
        let dir = tempfile_dir().join("folder");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("b.jsonl"), "{\"text\": \"second\"}\n").unwrap();
        std::fs::write(dir.join("a.txt"), "first\n").unwrap();
        std::fs::write(dir.join(".hidden"), "junk").unwrap();
        let texts: Vec<String> = read_rows(&dir)
            .unwrap()
            .into_iter()
            .map(|(_, r)| r["text"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(texts, ["first", "second"]);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("graft-source-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
