//! Python's `random.Random(seed)` — the Mersenne Twister MT19937 with CPython's integer seeding
//! (`init_by_array` over the seed's 32-bit words) and `Random.sample` (CPython 3.11
//! `Lib/random.py`) — because lm-eval draws few-shot examples with `random.Random(1234)` and
//! `rnd.sample(docs, n)`: the same draws give the same prompts.

const N: usize = 624;
const M: usize = 397;

pub struct PyRandom {
    mt: [u32; N],
    index: usize,
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative integer seed.
    pub fn new(seed: u64) -> Self {
        let mut key: Vec<u32> = Vec::new();
        let mut s = seed;
        while s > 0 {
            key.push(s as u32);
            s >>= 32;
        }
        if key.is_empty() {
            key.push(0);
        }
        let mut r = Self {
            mt: [0; N],
            index: N,
        };
        r.init_by_array(&key);
        r
    }

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..N {
            let prev = self.mt[i - 1];
            self.mt[i] = 1812433253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        self.index = N;
    }

    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19650218);
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1664525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1566083941))
                .wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
        }
        self.mt[0] = 0x8000_0000;
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            for k in 0..N {
                let y = (self.mt[k] & 0x8000_0000) | (self.mt[(k + 1) % N] & 0x7fff_ffff);
                let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
                self.mt[k] = self.mt[(k + M) % N] ^ (y >> 1) ^ mag;
            }
            self.index = 0;
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `getrandbits(k)` for k ≤ 64 (words low first, the last one's high bits dropped).
    fn getrandbits(&mut self, k: u32) -> u64 {
        match k {
            0 => 0,
            1..=32 => (self.next_u32() >> (32 - k)) as u64,
            _ => {
                let low = self.next_u32() as u64;
                let high = (self.next_u32() >> (64 - k)) as u64;
                low | (high << 32)
            }
        }
    }

    /// `_randbelow(n)`: rejection sampling on `n.bit_length()` bits.
    pub fn randbelow(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let k = usize::BITS - n.leading_zeros();
        loop {
            let r = self.getrandbits(k) as usize;
            if r < n {
                return r;
            }
        }
    }

    /// `random()`: 53 random bits from two draws, in [0, 1).
    pub fn random(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67108864.0 + b) * (1.0 / 9007199254740992.0)
    }

    /// `choices(range(n), k=k)` (no weights): ⌊random()·n⌋, k times.
    pub fn choices(&mut self, n: usize, k: usize) -> Vec<usize> {
        (0..k)
            .map(|_| (self.random() * n as f64) as usize)
            .collect()
    }

    /// `sample(range(n), k)`: k distinct indices below n, in draw order.
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let k = k.min(n);
        let mut setsize = 21usize;
        if k > 5 {
            let e = ((k * 3) as f64).ln() / 4f64.ln();
            setsize += 4usize.pow(e.ceil() as u32);
        }
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            (0..k)
                .map(|i| {
                    let j = self.randbelow(n - i);
                    let picked = pool[j];
                    pool[j] = pool[n - i - 1];
                    picked
                })
                .collect()
        } else {
            let mut selected = std::collections::HashSet::new();
            (0..k)
                .map(|_| loop {
                    let j = self.randbelow(n);
                    if selected.insert(j) {
                        break j;
                    }
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_cpython() {
        // python3: r = random.Random(1234); [r.getrandbits(32) for _ in range(3)]
        let mut r = PyRandom::new(1234);
        let got: Vec<u32> = (0..3).map(|_| r.next_u32()).collect();
        assert_eq!(got, vec![4150886329, 3342196574, 1892932127]);
        // python3: r = random.Random(1234); [r.sample(range(5), 2) for _ in range(9)]
        // (lm-eval's 2-shot picks for the tiny_mc fixture, tests/fixtures/eval).
        let mut r = PyRandom::new(1234);
        let picks: Vec<Vec<usize>> = (0..9).map(|_| r.sample(5, 2)).collect();
        assert_eq!(
            picks,
            vec![
                vec![3, 0],
                vec![0, 4],
                vec![4, 0],
                vec![0, 4],
                vec![2, 1],
                vec![0, 4],
                vec![0, 2],
                vec![4, 3],
                vec![4, 3]
            ]
        );
        // The set-based branch (n > setsize) and k > 5:
        // r = random.Random(1234); r.sample(range(100), 8), r.sample(range(30), 7)
        let mut r = PyRandom::new(1234);
        assert_eq!(r.sample(100, 8), vec![99, 56, 14, 0, 11, 74, 4, 85]);
        assert_eq!(r.sample(30, 7), vec![22, 2, 3, 24, 11, 7, 0]);
        // r = random.Random(0); [r.random() for _ in range(2)]; random.Random(0).choices(range(5), k=6)
        let mut r = PyRandom::new(0);
        assert_eq!(
            (r.random(), r.random()),
            (0.8444218515250481, 0.7579544029403025)
        );
        assert_eq!(PyRandom::new(0).choices(5, 6), vec![4, 3, 2, 1, 2, 2]);
    }
}
