//! Translation Edit Rate as sacrebleu 2.x computes it (`metrics/ter.py`, `lib_ter.py`, Tercom's
//! algorithm; lm-eval's `ter` aggregation = `sacrebleu.corpus_ter`): lower-cased,
//! whitespace-tokenised words; per hypothesis, greedy block shifts (at most 10 words, 50
//! positions away, 1000 candidates per sentence) chosen by how much they cut a beam-limited
//! (25 around the length-scaled diagonal) word edit distance, ties broken by length, earlier
//! start, earlier target, then the shifted words; the fewest edits over the references over
//! their average length. Corpus TER = 100 · Σ edits / Σ average reference length.

const MAX_SHIFT_SIZE: usize = 10;
const MAX_SHIFT_DIST: usize = 50;
const BEAM_WIDTH: usize = 25;
const MAX_SHIFT_CANDIDATES: usize = 1000;
const INF: i64 = 10_000_000_000_000_000;

/// sacrebleu's TER preprocessing: right-strip, lower-case, split on whitespace.
fn words(s: &str) -> Vec<String> {
    s.trim_end()
        .to_lowercase()
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Edit distance between `hyp` and `reference` within the beam, and its trace (hyp → ref:
/// ' ' keep, 's' substitute, 'd' drop a hyp word, 'i' insert a ref word).
fn edit_distance(hyp: &[String], reference: &[String]) -> (i64, Vec<u8>) {
    let (nh, nr) = (hyp.len(), reference.len());
    let mut dist = vec![vec![(INF, b'x'); nr + 1]; nh + 1];
    for (j, cell) in dist[0].iter_mut().enumerate() {
        *cell = (j as i64, b'i');
    }
    let ratio = if nh > 0 { nr as f64 / nh as f64 } else { 1.0 };
    let beam = if (BEAM_WIDTH as f64) < ratio / 2.0 {
        (ratio / 2.0 + BEAM_WIDTH as f64).ceil() as i64
    } else {
        BEAM_WIDTH as i64
    };
    for i in 1..=nh {
        let diag = (i as f64 * ratio).floor() as i64;
        let min_j = (diag - beam).max(0) as usize;
        let mut max_j = ((diag + beam).max(0) as usize).min(nr + 1);
        if i == nh {
            max_j = nr + 1;
        }
        for j in min_j..max_j {
            if j == 0 {
                dist[i][0] = (dist[i - 1][0].0 + 1, b'd');
                continue;
            }
            let (sub_cost, sub_op) = match hyp[i - 1] == reference[j - 1] {
                true => (0, b' '),
                false => (1, b's'),
            };
            for (cost, op) in [
                (dist[i - 1][j - 1].0 + sub_cost, sub_op),
                (dist[i - 1][j].0 + 1, b'd'),
                (dist[i][j - 1].0 + 1, b'i'),
            ] {
                if dist[i][j].0 > cost {
                    dist[i][j] = (cost, op);
                }
            }
        }
    }
    let mut trace = Vec::new();
    let (mut i, mut j) = (nh, nr);
    while i > 0 || j > 0 {
        let op = dist[i][j].1;
        trace.push(op);
        match op {
            b' ' | b's' => {
                i -= 1;
                j -= 1;
            }
            b'i' if j > 0 => j -= 1,
            // 'd', or a cell the beam never reached (sacrebleu would raise): drop a hyp word.
            _ if i > 0 => i -= 1,
            _ => j -= 1,
        }
    }
    trace.reverse();
    (dist[nh][nr].0, trace)
}

/// From the reference's point of view: ref position → hyp position, and error flags of each.
fn alignment(trace: &[u8]) -> (Vec<i64>, Vec<bool>, Vec<bool>) {
    // align[r] = the hyp position of reference word r (pushed in reference order).
    let mut h = -1i64;
    let (mut align, mut ref_err, mut hyp_err) = (Vec::new(), Vec::new(), Vec::new());
    for &op in trace {
        // The trace is flipped (ref → hyp): a dropped hyp word is an insertion here.
        match op {
            b' ' | b's' => {
                h += 1;
                align.push(h);
                hyp_err.push(op == b's');
                ref_err.push(op == b's');
            }
            b'd' => {
                h += 1;
                hyp_err.push(true);
            }
            _ => {
                align.push(h);
                ref_err.push(true);
            }
        }
    }
    (align, ref_err, hyp_err)
}

fn perform_shift(w: &[String], start: usize, len: usize, target: usize) -> Vec<String> {
    let block = &w[start..start + len];
    if target < start {
        [&w[..target], block, &w[target..start], &w[start + len..]].concat()
    } else if target > start + len {
        [&w[..start], &w[start + len..target], block, &w[target..]].concat()
    } else {
        [
            &w[..start],
            &w[start + len..len + target],
            block,
            &w[len + target..],
        ]
        .concat()
    }
}

/// The best shift of `hyp` (its gain and result), or gain 0; `checked` counts candidates.
fn best_shift(hyp: &[String], reference: &[String], checked: &mut usize) -> (i64, Vec<String>) {
    let (pre, trace) = edit_distance(hyp, reference);
    let (align, ref_err, hyp_err) = alignment(&trace);
    type Candidate = (i64, usize, i64, i64, Vec<String>);
    let mut best: Option<Candidate> = None;
    'pairs: for start_h in 0..hyp.len() {
        for start_r in 0..reference.len() {
            if start_h.abs_diff(start_r) > MAX_SHIFT_DIST {
                continue;
            }
            let mut len = 0;
            while len < MAX_SHIFT_SIZE && hyp[start_h + len] == reference[start_r + len] {
                len += 1;
                let moved = start_h..start_h + len;
                // Only blocks with errors on both sides, not already where they belong.
                let skip = !hyp_err[moved.clone()].iter().any(|&e| e)
                    || !ref_err[start_r..start_r + len].iter().any(|&e| e)
                    || (moved.start as i64..moved.end as i64).contains(&align[start_r]);
                if !skip {
                    let mut prev = None;
                    for offset in -1i64..len as i64 {
                        let at = start_r as i64 + offset;
                        let idx = match at {
                            -1 => 0,
                            a if (a as usize) < align.len() => (align[a as usize] + 1) as usize,
                            _ => break,
                        };
                        if prev == Some(idx) {
                            continue;
                        }
                        prev = Some(idx);
                        let shifted = perform_shift(hyp, start_h, len, idx);
                        let gain = pre - edit_distance(&shifted, reference).0;
                        let cand = (gain, len, -(start_h as i64), -(idx as i64), shifted);
                        *checked += 1;
                        if best.as_ref().is_none_or(|b| cand > *b) {
                            best = Some(cand);
                        }
                    }
                }
                if *checked >= MAX_SHIFT_CANDIDATES {
                    break 'pairs;
                }
                if start_h + len == hyp.len() || start_r + len == reference.len() {
                    break;
                }
            }
        }
    }
    match best {
        Some((gain, _, _, _, words)) => (gain, words),
        None => (0, hyp.to_vec()),
    }
}

/// (edits, reference length) of one hypothesis against one reference.
fn edit_rate(hyp: &[String], reference: &[String]) -> (i64, usize) {
    if reference.is_empty() {
        return (hyp.len() as i64, 0);
    }
    let (mut words, mut shifts, mut checked) = (hyp.to_vec(), 0, 0);
    loop {
        let (gain, shifted) = best_shift(&words, reference, &mut checked);
        if checked >= MAX_SHIFT_CANDIDATES || gain <= 0 {
            break;
        }
        shifts += 1;
        words = shifted;
    }
    (shifts + edit_distance(&words, reference).0, reference.len())
}

/// One segment's statistics: the fewest edits over the references, their average length.
pub fn segment(refs: &[String], hyp: &str) -> [f64; 2] {
    let h = words(hyp);
    let (mut best, mut total) = (i64::MAX, 0usize);
    for r in refs {
        let (edits, len) = edit_rate(&h, &words(r));
        total += len;
        best = best.min(edits);
    }
    [best as f64, total as f64 / refs.len().max(1) as f64]
}

pub fn from_stats(stats: &[[f64; 2]]) -> f64 {
    let (edits, len) = stats
        .iter()
        .fold((0.0, 0.0), |a, s| (a.0 + s[0], a.1 + s[1]));
    100.0
        * match (len > 0.0, edits > 0.0) {
            (true, _) => edits / len,
            (false, true) => 1.0,
            _ => 0.0,
        }
}

pub fn corpus_ter(items: &[(Vec<String>, String)]) -> f64 {
    from_stats(&items.iter().map(|(r, h)| segment(r, h)).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use graft_testkit::read_json;

    #[test]
    fn equals_sacrebleu_on_shifts_beams_and_empty_sides() {
        // tests/fixtures/eval/ter_reference.json: sacrebleu 2.6.0 corpus_ter per case
        // (tools/fixtures/make_ter_fixture.py): block reorders, repeated words, 70-word
        // sentences, a 4- vs 120-word pair (wider beam), empty hypothesis or reference.
        let f = read_json("eval/ter_reference.json");
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect()
        };
        let mut first = Vec::new();
        for c in f["cases"].as_array().unwrap() {
            let (hyp, refs) = (c["hypothesis"].as_str().unwrap(), strings(&c["references"]));
            let s = super::segment(&refs, hyp);
            assert_eq!(
                s[0],
                c["num_edits"].as_f64().unwrap(),
                "{hyp:?} vs {refs:?}"
            );
            assert!(
                (super::from_stats(&[s]) - c["score"].as_f64().unwrap()).abs() < 1e-9,
                "{hyp:?}"
            );
            first.push((vec![refs[0].clone()], hyp.to_string()));
        }
        let want = f["corpus_first_reference"].as_f64().unwrap();
        assert!((super::corpus_ter(&first) - want).abs() < 1e-9);
    }
}
