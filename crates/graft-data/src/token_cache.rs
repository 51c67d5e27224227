//! A token cache on disk, read by memory-mapping: `tokens.bin` holds every document's token ids
//! back to back (little-endian u16 when the vocabulary fits, else u32), `offsets.bin` the u64 start
//! of each document plus the end, `cache.json` the dtype, counts, vocabulary size and the tokenizer
//! and source it came from. Pretraining then reads tokens at disk speed instead of re-tokenizing.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CacheInfo {
    /// "u16" or "u32".
    pub dtype: String,
    pub documents: usize,
    pub tokens: usize,
    pub vocab_size: usize,
    pub tokenizer: String,
    pub source: String,
}

/// Writes a cache into `dir` (created) through temporary files renamed at the end.
pub struct CacheWriter {
    dir: PathBuf,
    tokens: BufWriter<std::fs::File>,
    offsets: Vec<u64>,
    wide: bool,
    vocab_size: usize,
}

fn io(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

impl CacheWriter {
    pub fn create(dir: &Path, vocab_size: usize) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let tmp = dir.join(".tokens.bin.tmp");
        let file = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            tokens: BufWriter::new(file),
            offsets: vec![0],
            wide: vocab_size > u16::MAX as usize + 1,
            vocab_size,
        })
    }

    pub fn push(&mut self, ids: &[u32]) -> Result<(), String> {
        let path = self.dir.join(".tokens.bin.tmp");
        for &id in ids {
            if id as usize >= self.vocab_size {
                return Err(format!(
                    "token id {id} is outside the vocabulary ({})",
                    self.vocab_size
                ));
            }
            let r = if self.wide {
                self.tokens.write_all(&id.to_le_bytes())
            } else {
                self.tokens.write_all(&(id as u16).to_le_bytes())
            };
            r.map_err(|e| io(&path, e))?;
        }
        let last = *self.offsets.last().expect("starts with 0");
        self.offsets.push(last + ids.len() as u64);
        Ok(())
    }

    pub fn finish(mut self, tokenizer: &str, source: &str) -> Result<CacheInfo, String> {
        let tmp = self.dir.join(".tokens.bin.tmp");
        self.tokens.flush().map_err(|e| io(&tmp, e))?;
        let offsets: Vec<u8> = self.offsets.iter().flat_map(|o| o.to_le_bytes()).collect();
        let info = CacheInfo {
            dtype: if self.wide { "u32" } else { "u16" }.into(),
            documents: self.offsets.len() - 1,
            tokens: *self.offsets.last().expect("starts with 0") as usize,
            vocab_size: self.vocab_size,
            tokenizer: tokenizer.into(),
            source: source.into(),
        };
        let json = serde_json::to_string_pretty(&info).map_err(|e| e.to_string())?;
        for (name, bytes) in [("offsets.bin", offsets), ("cache.json", json.into_bytes())] {
            let path = self.dir.join(name);
            graft_models::fsio::write_file(&path, &bytes).map_err(|e| io(&path, e))?;
        }
        drop(self.tokens);
        graft_models::fsio::commit_file(&tmp, &self.dir.join("tokens.bin"))
            .map_err(|e| io(&tmp, e))?;
        Ok(info)
    }
}

/// A cache opened for reading (memory-mapped).
pub struct TokenCache {
    pub info: CacheInfo,
    tokens: memmap2::Mmap,
    offsets: Vec<u64>,
}

impl TokenCache {
    pub fn open(dir: &Path) -> Result<Self, String> {
        let info_path = dir.join("cache.json");
        let text = std::fs::read_to_string(&info_path).map_err(|e| io(&info_path, e))?;
        let info: CacheInfo =
            serde_json::from_str(&text).map_err(|e| io(&info_path, format!("invalid: {e}")))?;
        let off_path = dir.join("offsets.bin");
        let raw = std::fs::read(&off_path).map_err(|e| io(&off_path, e))?;
        let offsets: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let tok_path = dir.join("tokens.bin");
        let file = std::fs::File::open(&tok_path).map_err(|e| io(&tok_path, e))?;
        // SAFETY: read-only map of a file graft wrote and never modifies in place.
        let tokens = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io(&tok_path, e))?;
        let width = match info.dtype.as_str() {
            "u32" => 4,
            "u16" => 2,
            other => {
                return Err(io(
                    &info_path,
                    format!("dtype `{other}`: expected u16 or u32"),
                ))
            }
        };
        // Offsets start at 0 and never decrease, so every document is a slice of tokens.bin.
        let monotone = offsets.first() == Some(&0) && offsets.windows(2).all(|w| w[0] <= w[1]);
        if !monotone
            || Some(offsets.len()) != info.documents.checked_add(1)
            || Some(tokens.len()) != info.tokens.checked_mul(width)
            || offsets.last() != Some(&(info.tokens as u64))
        {
            return Err(io(
                dir,
                "the cache is incomplete or corrupt (sizes disagree with cache.json)",
            ));
        }
        Ok(Self {
            info,
            tokens,
            offsets,
        })
    }

    pub fn len(&self) -> usize {
        self.info.documents
    }

    pub fn is_empty(&self) -> bool {
        self.info.documents == 0
    }

    /// Token ids of document `i`.
    pub fn document(&self, i: usize) -> Vec<u32> {
        let (a, b) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        if self.info.dtype == "u32" {
            self.tokens[a * 4..b * 4]
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4")))
                .collect()
        } else {
            self.tokens[a * 2..b * 2]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes(c.try_into().expect("2")) as u32)
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decreasing_or_oversized_offsets_are_errors() {
        let dir = std::env::temp_dir().join(format!("graft-cache-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut w = CacheWriter::create(&dir, 1000).unwrap();
        for d in [vec![1u32, 2, 3], vec![4, 5], vec![6]] {
            w.push(&d).unwrap();
        }
        w.finish("tok", "src").unwrap();
        assert!(TokenCache::open(&dir).is_ok());
        let offsets = dir.join("offsets.bin");
        for bad in [[0u64, 5, 2, 6], [0, 3, 9, 6], [1, 3, 5, 6]] {
            let bytes: Vec<u8> = bad.iter().flat_map(|o| o.to_le_bytes()).collect();
            std::fs::write(&offsets, bytes).unwrap();
            let e = TokenCache::open(&dir).err().unwrap();
            assert!(e.contains("corrupt"), "{bad:?}: {e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn documents_round_trip_in_both_widths() {
        for vocab in [1000usize, 100_000] {
            let dir =
                std::env::temp_dir().join(format!("graft-cache-{}-{vocab}", std::process::id()));
            let docs = vec![vec![1u32, 2, 3], vec![], vec![999, 0]];
            let mut w = CacheWriter::create(&dir, vocab).unwrap();
            for d in &docs {
                w.push(d).unwrap();
            }
            let info = w.finish("tok", "src").unwrap();
            assert_eq!(info.dtype, if vocab > 65536 { "u32" } else { "u16" });
            let c = TokenCache::open(&dir).unwrap();
            assert_eq!(
                (0..c.len()).map(|i| c.document(i)).collect::<Vec<_>>(),
                docs
            );
            std::fs::write(dir.join("tokens.bin"), [0u8; 3]).unwrap();
            let err = TokenCache::open(&dir)
                .err()
                .expect("a corrupt cache is refused");
            assert!(err.contains("corrupt"), "{err}");
        }
    }
}
