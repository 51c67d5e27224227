//! A deterministic loader over one task's rows: the order of rows in epoch e is a seeded
//! permutation, a pure function of (seed, epoch), and the loader's position (epoch, cursor) is all
//! a checkpoint needs to resume it exactly. Mixtures of tasks (mixture.rs) hold one per task.

use graft_data::rows::TrainRow;
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

/// Seeded, resumable iteration over rows, epoch after epoch.
pub struct Loader {
    rows: Vec<TrainRow>,
    seed: u64,
    pub epoch: usize,
    pub cursor: usize,
    order: Vec<usize>,
}

impl Loader {
    pub fn new(rows: Vec<TrainRow>, seed: u64) -> Self {
        let mut l = Self {
            rows,
            seed,
            epoch: 0,
            cursor: 0,
            order: Vec::new(),
        };
        l.seek(0, 0);
        l
    }

    fn permutation(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.rows.len()).collect();
        let mut rng =
            StdRng::seed_from_u64(self.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        order.shuffle(&mut rng);
        order
    }

    /// Moves to `cursor` within `epoch`.
    pub fn seek(&mut self, epoch: usize, cursor: usize) {
        self.epoch = epoch;
        self.cursor = cursor;
        self.order = self.permutation(epoch);
    }

    /// The next `n` rows, crossing into the next epoch when one ends.
    pub fn next(&mut self, n: usize) -> Vec<&TrainRow> {
        let picked: Vec<usize> = (0..n).map(|_| self.next_index()).collect();
        picked.into_iter().map(|i| &self.rows[i]).collect()
    }

    /// Index (into [`Self::rows`]) of the next row, crossing into the next epoch when one ends.
    pub fn next_index(&mut self) -> usize {
        if self.cursor == self.order.len() {
            let next = self.epoch + 1;
            self.seek(next, 0);
        }
        self.cursor += 1;
        self.order[self.cursor - 1]
    }

    pub fn rows(&self) -> &[TrainRow] {
        &self.rows
    }
}
