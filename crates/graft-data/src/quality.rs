//! Simple quality filters in the spirit of Gopher's rules (Rae et al. 2021, appendix A): document
//! length in words, the share of symbol characters, the share of duplicated lines, and the share of
//! words covered by the most frequent word 3-gram. Each failing rule is named in the report.

use std::collections::HashMap;

use crate::decontaminate::words;

#[derive(Debug, Clone)]
pub struct QualityFilter {
    pub min_words: usize,
    pub max_words: usize,
    /// Non-alphanumeric, non-whitespace, non-basic-punctuation characters / non-space characters.
    pub max_symbol_ratio: f64,
    /// Lines that repeat an earlier line / lines.
    pub max_dup_line_fraction: f64,
    /// Words covered by the most frequent word 3-gram / words (Gopher: 0.18).
    pub max_top_trigram_fraction: f64,
}

impl Default for QualityFilter {
    fn default() -> Self {
        Self {
            min_words: 1,
            max_words: usize::MAX,
            max_symbol_ratio: 0.3,
            max_dup_line_fraction: 0.3,
            max_top_trigram_fraction: 0.18,
        }
    }
}

impl QualityFilter {
    /// `None` when the text passes, else the first rule it breaks, with the measured value.
    pub fn check(&self, text: &str) -> Option<String> {
        let w = words(text);
        if w.len() < self.min_words {
            return Some(format!("{} words < min_words {}", w.len(), self.min_words));
        }
        if w.len() > self.max_words {
            return Some(format!("{} words > max_words {}", w.len(), self.max_words));
        }
        let visible: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
        let symbols = visible
            .iter()
            .filter(|c| !c.is_alphanumeric() && !".,;:!?'\"()-".contains(**c))
            .count();
        let ratio = symbols as f64 / visible.len().max(1) as f64;
        if ratio > self.max_symbol_ratio {
            return Some(format!(
                "symbol ratio {ratio:.3} > {}",
                self.max_symbol_ratio
            ));
        }
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if lines.len() > 1 {
            let mut seen = std::collections::HashSet::new();
            let dups = lines.iter().filter(|l| !seen.insert(**l)).count();
            let f = dups as f64 / lines.len() as f64;
            if f > self.max_dup_line_fraction {
                return Some(format!(
                    "duplicate-line fraction {f:.3} > {}",
                    self.max_dup_line_fraction
                ));
            }
        }
        if w.len() >= 6 {
            let mut counts: HashMap<&[String], usize> = HashMap::new();
            for g in w.windows(3) {
                *counts.entry(g).or_default() += 1;
            }
            let (gram, n) = counts
                .iter()
                .max_by_key(|(_, &n)| n)
                .map(|(g, n)| (*g, *n))
                .unwrap_or((&[], 0));
            let covered = (n * gram.iter().map(|x| x.len()).sum::<usize>()) as f64;
            let total = w.iter().map(|x| x.len()).sum::<usize>() as f64;
            let f = if n > 1 { covered / total } else { 0.0 };
            if f > self.max_top_trigram_fraction {
                return Some(format!(
                    "top word 3-gram covers {f:.3} > {}",
                    self.max_top_trigram_fraction
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_names_itself() {
        let f = QualityFilter {
            min_words: 5,
            ..Default::default()
        };
        assert!(f.check("Too short.").unwrap().contains("min_words"));
        assert!(f
            .check("#### $$$$ %%%% @@@@ ^^^^ &&&& some words here right now")
            .unwrap()
            .contains("symbol"));
        assert!(f
            .check("one line here ok\none line here ok\none line here ok\nanother line")
            .unwrap()
            .contains("duplicate-line"));
        assert!(f
            .check("buy now cheap buy now cheap buy now cheap buy now cheap")
            .unwrap()
            .contains("3-gram"));
        assert_eq!(f.check("It is a truth universally acknowledged, that a single man in possession of a good fortune must be in want of a wife."), None);
    }
}
