//! A bounded walk over a GGUF header before candle reads it. candle's reader sizes its buffers
//! from the lengths in the file, so a corrupt length (a string of 2^60 bytes, an array of 2^50
//! entries) would abort the process on allocation, past any panic guard. Here every length is
//! checked against the bytes the file still holds before anything is read, array nesting and
//! tensor ranks are capped, and tensor shapes must not overflow.

use std::io::{BufReader, Read};
use std::path::Path;

const MAX_DEPTH: usize = 4;
const MAX_DIMS: u32 = 4;
/// Elements in one tensor (2^40: a thousand times the largest released embedding matrix).
const MAX_ELEMENTS: u64 = 1 << 40;

struct Walk<R> {
    r: R,
    left: u64,
    /// v1 files count lengths in u32.
    wide: bool,
}

impl<R: Read> Walk<R> {
    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let mut b = [0u8; N];
        self.take(N as u64, what)?;
        self.r
            .read_exact(&mut b)
            .map_err(|e| format!("{what}: {e}"))?;
        Ok(b)
    }
    fn take(&mut self, n: u64, what: &str) -> Result<(), String> {
        self.left = self
            .left
            .checked_sub(n)
            .ok_or_else(|| format!("{what}: {n} bytes declared, {} left in the file", self.left))?;
        Ok(())
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes(what)?))
    }
    fn len(&mut self, what: &str) -> Result<u64, String> {
        match self.wide {
            true => self.u64(what),
            false => self.u32(what).map(u64::from),
        }
    }
    fn skip(&mut self, n: u64, what: &str) -> Result<(), String> {
        self.take(n, what)?;
        let got = std::io::copy(&mut (&mut self.r).take(n), &mut std::io::sink())
            .map_err(|e| format!("{what}: {e}"))?;
        match got == n {
            true => Ok(()),
            false => Err(format!("{what}: the file ends early")),
        }
    }
    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.len(what)?;
        if n > self.left {
            return Err(format!(
                "{what}: a string of {n} bytes, {} left in the file",
                self.left
            ));
        }
        let mut b = Vec::new();
        self.take(n, what)?;
        (&mut self.r)
            .take(n)
            .read_to_end(&mut b)
            .map_err(|e| format!("{what}: {e}"))?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }
    /// A value of GGUF type `ty`.
    fn value(&mut self, ty: u32, what: &str, depth: usize) -> Result<(), String> {
        match ty {
            0 | 1 | 7 => self.skip(1, what),
            2 | 3 => self.skip(2, what),
            4..=6 => self.skip(4, what),
            10..=12 => self.skip(8, what),
            8 => {
                let n = self.len(what)?;
                self.skip(n, what)
            }
            9 if depth >= MAX_DEPTH => Err(format!("{what}: arrays nested past {MAX_DEPTH}")),
            9 => {
                let inner = self.u32(what)?;
                let n = self.len(what)?;
                // Every element takes at least one byte: a count past the file is corrupt.
                if n > self.left {
                    return Err(format!(
                        "{what}: an array of {n} entries, {} bytes left",
                        self.left
                    ));
                }
                (0..n).try_for_each(|_| self.value(inner, what, depth + 1))
            }
            other => Err(format!("{what}: unknown value type {other}")),
        }
    }
}

/// Checks the header of the GGUF file at `path`.
pub fn check_file(path: &Path) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    check(BufReader::new(file), len)
}

/// Checks a GGUF header read from `r`, a file of `len` bytes.
pub fn check(r: impl Read, len: u64) -> Result<(), String> {
    let mut w = Walk {
        r,
        left: len,
        wide: true,
    };
    if &w.bytes::<4>("magic")? != b"GGUF" {
        return Err("not a GGUF file (no GGUF magic)".into());
    }
    let version = w.u32("version")?;
    if !(1..=3).contains(&version) {
        return Err(format!("GGUF version {version} is not supported (1–3)"));
    }
    w.wide = version >= 2;
    let tensors = w.len("tensor_count")?;
    let kvs = w.len("metadata_kv_count")?;
    for i in 0..kvs {
        let key = w.string(&format!("metadata entry {i}: key"))?;
        let ty = w.u32(&format!("metadata `{key}`: type"))?;
        w.value(ty, &format!("metadata `{key}`"), 0)?;
    }
    for i in 0..tensors {
        let name = w.string(&format!("tensor {i}: name"))?;
        let what = format!("tensor `{name}`");
        let dims = w.u32(&what)?;
        if dims > MAX_DIMS {
            return Err(format!("{what}: {dims} dimensions (at most {MAX_DIMS})"));
        }
        let mut elements: u64 = 1;
        for _ in 0..dims {
            let d = w.len(&what)?;
            elements = elements
                .checked_mul(d)
                .filter(|&e| e <= MAX_ELEMENTS)
                .ok_or_else(|| {
                    format!("{what}: its shape holds more than {MAX_ELEMENTS} elements")
                })?;
        }
        w.u32(&what)?;
        w.u64(&what)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kvs: &[(&str, u32, Vec<u8>)], tensors: &[(&str, &[u64])]) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((tensors.len() as u64).to_le_bytes());
        b.extend((kvs.len() as u64).to_le_bytes());
        let s = |b: &mut Vec<u8>, t: &str| {
            b.extend((t.len() as u64).to_le_bytes());
            b.extend(t.as_bytes());
        };
        for (k, ty, v) in kvs {
            s(&mut b, k);
            b.extend(ty.to_le_bytes());
            b.extend(v);
        }
        for (name, dims) in tensors {
            s(&mut b, name);
            b.extend((dims.len() as u32).to_le_bytes());
            dims.iter().for_each(|d| b.extend(d.to_le_bytes()));
            b.extend(0u32.to_le_bytes());
            b.extend(0u64.to_le_bytes());
        }
        b
    }

    fn checked(b: &[u8]) -> Result<(), String> {
        check(b, b.len() as u64)
    }

    #[test]
    fn a_sound_header_passes_and_corrupt_lengths_do_not_allocate() {
        let mut arr = 8u32.to_le_bytes().to_vec();
        arr.extend(2u64.to_le_bytes());
        for t in ["a", "bc"] {
            arr.extend((t.len() as u64).to_le_bytes());
            arr.extend(t.as_bytes());
        }
        let good = header(
            &[
                (
                    "general.name",
                    8,
                    [3u64.to_le_bytes().to_vec(), b"abc".to_vec()].concat(),
                ),
                ("tokens", 9, arr),
            ],
            &[("w", &[4, 8])],
        );
        checked(&good).unwrap();
        // A string that claims 2^60 bytes.
        let huge = header(&[("k", 8, (1u64 << 60).to_le_bytes().to_vec())], &[]);
        assert!(checked(&huge).unwrap_err().contains("left in the file"));
        // An array of 2^50 u8.
        let mut arr = 0u32.to_le_bytes().to_vec();
        arr.extend((1u64 << 50).to_le_bytes());
        assert!(checked(&header(&[("k", 9, arr)], &[]))
            .unwrap_err()
            .contains("array of"));
        // A shape whose product overflows, and too many dimensions.
        let e = checked(&header(&[], &[("w", &[1 << 32, 1 << 32, 1 << 32])])).unwrap_err();
        assert!(e.contains("more than"), "{e}");
        let e = checked(&header(&[], &[("w", &[1, 1, 1, 1, 1])])).unwrap_err();
        assert!(e.contains("dimensions"), "{e}");
        // Counts past the file.
        let mut b = good.clone();
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(checked(&b).is_err());
        // Every truncation is an error, never a panic.
        for n in 0..good.len() {
            assert!(checked(&good[..n]).is_err(), "truncated at {n}");
        }
    }
}
