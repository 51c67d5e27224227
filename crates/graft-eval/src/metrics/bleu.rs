//! Corpus BLEU as sacrebleu 2.x computes it with its defaults (Papineni et al. 2002; Post 2018):
//! the `13a` tokenizer (mteval-v13a's punctuation splitting), n-grams up to 4 clipped by the
//! largest count in any reference, the closest reference length (ties: the shorter) for the
//! brevity penalty, and `exp` smoothing (an n-gram order with no match counts as
//! 1 / (2^k · total) for the k-th such order). Scores are in [0, 100].

use std::collections::HashMap;
use std::sync::LazyLock;

static RULES_13A: LazyLock<[(regex::Regex, &str); 4]> = LazyLock::new(|| {
    let re = |p: &str| regex::Regex::new(p).expect("13a patterns compile");
    [
        (re(r"([\{-~\[-` -&\(-\+:-@/])"), " $1 "),
        (re(r"([^0-9])([\.,])"), "$1 $2 "),
        (re(r"([\.,])([^0-9])"), " $1 $2"),
        (re(r"([0-9])(-)"), "$1 $2 "),
    ]
});

/// sacrebleu's `Tokenizer13a`.
pub fn tokenize_13a(line: &str) -> String {
    let mut s = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if s.contains('&') {
        s = s
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let mut out = format!(" {s} ");
    for (re, rep) in RULES_13A.iter() {
        out = re.replace_all(&out, *rep).to_string();
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn ngrams(tokens: &[&str], n: usize) -> HashMap<Vec<String>, usize> {
    let mut m = HashMap::new();
    for w in tokens.windows(n) {
        *m.entry(w.iter().map(|s| s.to_string()).collect())
            .or_insert(0) += 1;
    }
    m
}

/// Sufficient statistics of one segment: matches and totals per order, hypothesis and
/// reference lengths.
#[derive(Clone)]
pub struct Stats {
    pub correct: [usize; 4],
    pub total: [usize; 4],
    pub sys_len: usize,
    pub ref_len: usize,
}

pub fn segment(hyp: &str, refs: &[String]) -> Stats {
    let h = tokenize_13a(hyp);
    let ht: Vec<&str> = h.split_whitespace().collect();
    let rt: Vec<String> = refs.iter().map(|r| tokenize_13a(r)).collect();
    let rtoks: Vec<Vec<&str>> = rt.iter().map(|r| r.split_whitespace().collect()).collect();
    let mut ref_len = usize::MAX;
    let mut best_diff = usize::MAX;
    for r in &rtoks {
        let d = r.len().abs_diff(ht.len());
        if d < best_diff || (d == best_diff && r.len() < ref_len) {
            best_diff = d;
            ref_len = r.len();
        }
    }
    let mut s = Stats {
        correct: [0; 4],
        total: [0; 4],
        sys_len: ht.len(),
        ref_len: ref_len.min(usize::MAX - 1),
    };
    for n in 1..=4 {
        let hg = ngrams(&ht, n);
        let mut max_ref: HashMap<Vec<String>, usize> = HashMap::new();
        for r in &rtoks {
            for (g, c) in ngrams(r, n) {
                let e = max_ref.entry(g).or_insert(0);
                *e = (*e).max(c);
            }
        }
        for (g, c) in &hg {
            s.correct[n - 1] += (*c).min(max_ref.get(g).copied().unwrap_or(0));
            s.total[n - 1] += c;
        }
    }
    s
}

/// Corpus BLEU of (references, hypothesis) pairs.
pub fn corpus_bleu(items: &[(Vec<String>, String)]) -> f64 {
    let stats: Vec<Stats> = items.iter().map(|(refs, hyp)| segment(hyp, refs)).collect();
    from_stats(&stats)
}

/// Corpus BLEU from segments' statistics (summed), so resampling need not re-tokenize.
pub fn from_stats(stats: &[Stats]) -> f64 {
    let (mut correct, mut total, mut sys, mut rl) = ([0usize; 4], [0usize; 4], 0, 0);
    for s in stats {
        for n in 0..4 {
            correct[n] += s.correct[n];
            total[n] += s.total[n];
        }
        sys += s.sys_len;
        rl += s.ref_len;
    }
    // sacrebleu stops early when nothing matches: 0, not a smoothed score.
    if correct.iter().all(|&c| c == 0) {
        return 0.0;
    }
    let mut precisions = [0.0f64; 4];
    let mut smooth = 1.0;
    for n in 0..4 {
        if total[n] == 0 {
            break;
        }
        precisions[n] = if correct[n] == 0 {
            smooth *= 2.0;
            100.0 / (smooth * total[n] as f64)
        } else {
            100.0 * correct[n] as f64 / total[n] as f64
        };
    }
    let bp = if sys < rl {
        if sys > 0 {
            (1.0 - rl as f64 / sys as f64).exp()
        } else {
            0.0
        }
    } else {
        1.0
    };
    let log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
    bp * (precisions.iter().map(|&p| log(p)).sum::<f64>() / 4.0).exp()
}
