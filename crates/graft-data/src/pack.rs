//! Sequence packing without cross-document attention: examples are laid end to end in rows of at
//! most `max_len` tokens; each keeps its own positions (reset to 0) and a segment id, so the model's
//! attention mask is block-diagonal and no document sees another.
//!
//! Shapes: per row `input_ids`, `targets`, `positions`, `segments`, all (T ≤ max_len).

use crate::formats::Example;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PackedRow {
    pub input_ids: Vec<u32>,
    pub targets: Vec<bool>,
    pub positions: Vec<u32>,
    pub segments: Vec<u32>,
}

/// Greedy first-fit in order: an example that does not fit in the current row starts a new one.
/// Examples are never split (they were cut to `max_len` when tokenized).
pub fn pack(examples: &[Example], max_len: usize) -> Vec<PackedRow> {
    let mut rows = Vec::new();
    let mut row = PackedRow::default();
    let mut segment = 0;
    for ex in examples {
        let n = ex.input_ids.len().min(max_len);
        if !row.input_ids.is_empty() && row.input_ids.len() + n > max_len {
            rows.push(std::mem::take(&mut row));
            segment = 0;
        }
        row.input_ids.extend_from_slice(&ex.input_ids[..n]);
        // A document's first token has no prediction target inside its own document.
        row.targets.push(false);
        row.targets.extend_from_slice(&ex.targets[1..n]);
        row.positions.extend(0..n as u32);
        row.segments.extend(std::iter::repeat_n(segment, n));
        segment += 1;
    }
    if !row.input_ids.is_empty() {
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(ids: &[u32]) -> Example {
        let mut targets = vec![true; ids.len()];
        targets[0] = false;
        Example {
            input_ids: ids.to_vec(),
            targets,
        }
    }

    #[test]
    fn packs_with_resets_and_segments() {
        let rows = pack(&[ex(&[1, 2, 3]), ex(&[4, 5]), ex(&[6, 7, 8, 9])], 6);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].input_ids, vec![1, 2, 3, 4, 5]);
        assert_eq!(rows[0].positions, vec![0, 1, 2, 0, 1]);
        assert_eq!(rows[0].segments, vec![0, 0, 0, 1, 1]);
        assert_eq!(rows[0].targets, vec![false, true, true, false, true]);
        assert_eq!(rows[1].input_ids, vec![6, 7, 8, 9]);
        assert_eq!(rows[1].segments, vec![0, 0, 0, 0]);
    }
}
