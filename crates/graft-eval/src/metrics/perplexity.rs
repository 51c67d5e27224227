//! Perplexities and bits per byte (lm-eval `api/metrics.py`): corpus-level — sums of
//! log-likelihoods over sums of units — not means of per-document values.
//!
//! word_perplexity = exp(−Σ ll / Σ words), byte_perplexity = exp(−Σ ll / Σ bytes),
//! bits_per_byte = −Σ ll / Σ bytes / ln 2; `perplexity` (loglikelihood tasks) = exp(−mean ll).

pub fn weighted_perplexity(items: &[(f64, f64)]) -> f64 {
    let (ll, n) = items
        .iter()
        .fold((0.0, 0.0), |(a, b), (l, c)| (a + l, b + c));
    (-ll / n).exp()
}

pub fn bits_per_byte(items: &[(f64, f64)]) -> f64 {
    let (ll, n) = items
        .iter()
        .fold((0.0, 0.0), |(a, b), (l, c)| (a + l, b + c));
    -ll / n / std::f64::consts::LN_2
}

pub fn perplexity(lls: &[f64]) -> f64 {
    (-lls.iter().sum::<f64>() / lls.len() as f64).exp()
}

/// lm-eval's `Task.count_words`: `len(re.split(r"\s+", text))` — a leading or trailing
/// whitespace run adds an empty word.
pub fn count_words(text: &str) -> usize {
    let mut n = 1;
    let mut in_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if !in_space {
                n += 1;
            }
            in_space = true;
        } else {
            in_space = false;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_words_as_re_split() {
        // len(re.split(r"\s+", s)) for each s.
        assert_eq!(count_words("hello world."), 2);
        assert_eq!(count_words("a  b\nc\n"), 4);
        assert_eq!(count_words(" a"), 2);
        assert_eq!(count_words(""), 1);
    }

    #[test]
    fn corpus_level() {
        let items = [(-10.0, 5.0), (-30.0, 15.0)];
        assert!((weighted_perplexity(&items) - 2f64.exp()).abs() < 1e-12);
        assert!((bits_per_byte(&items) - 2.0 / std::f64::consts::LN_2).abs() < 1e-12);
    }
}
