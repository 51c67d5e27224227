//! Property tests: damaged data files (truncated, bytes changed) are errors, never panics
//! (graft_testkit::assert_no_panic): JSONL (plain and gzip), JSON arrays, Parquet, plain text, and each file of a
//! token cache.

use std::path::Path;

use graft_data::source::read_rows;
use graft_data::token_cache::{CacheWriter, TokenCache};
use graft_testkit::{assert_no_panic, fixture};

#[test]
fn damaged_row_files_are_errors() {
    for (name, fixture_name) in [
        ("chat.jsonl", "data/chat.jsonl"),
        ("chat.parquet", "data/chat.parquet"),
        ("text.parquet", "data/text.parquet"),
        (
            "prompt_completion.parquet",
            "data/prompt_completion.parquet",
        ),
    ] {
        let bytes = std::fs::read(fixture(fixture_name)).unwrap();
        read_rows(&fixture(fixture_name)).unwrap();
        assert_no_panic(name, &bytes, 300, read_rows);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &std::fs::read(fixture("data/chat.jsonl")).unwrap())
        .unwrap();
    assert_no_panic("chat.jsonl.gz", &gz.finish().unwrap(), 300, read_rows);
    // A .json file holding one JSON array of rows (as hub datasets ship them).
    assert_no_panic(
        "rows.json",
        b" [{\"question\": \"q \\u00e9\", \"choices\": [\"a\", \"b\"], \"label\": 1},\n {\"question\": \"r\"}]\n",
        300,
        read_rows,
    );
    assert_no_panic(
        "t.txt",
        b"Title\n\nFirst line\nsecond line.\n\n\nLast.\n",
        100,
        read_rows,
    );
}

#[test]
fn damaged_token_caches_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    for wide in [false, true] {
        let vocab = if wide { 70_000 } else { 300 };
        let _ = std::fs::remove_dir_all(&cache);
        let mut w = CacheWriter::create(&cache, vocab).unwrap();
        for doc in [&[1u32, 2, 3][..], &[], &[299, 7, 7, 7, 0]] {
            w.push(doc).unwrap();
        }
        w.finish("tok", "src").unwrap();
        let read_all = |c: &Path| -> Result<usize, String> {
            let t = TokenCache::open(c)?;
            Ok((0..t.len()).map(|i| t.document(i).len()).sum())
        };
        assert_eq!(read_all(&cache).unwrap(), 8);
        for file in ["cache.json", "offsets.bin", "tokens.bin"] {
            let good = std::fs::read(cache.join(file)).unwrap();
            let cache = cache.clone();
            assert_no_panic(file, &good, 300, |damaged: &Path| {
                std::fs::copy(damaged, cache.join(file)).unwrap();
                read_all(&cache)
            });
            std::fs::write(cache.join(file), &good).unwrap();
        }
    }
}
