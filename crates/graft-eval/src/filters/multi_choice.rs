//! lm-eval's `multi_choice_regex` filter (`filters/extraction.py` `MultiChoiceRegexFilter`): the
//! answer letter of a generated response to a lettered multiple-choice question. In order:
//! the task's regex; else the text of one of the document's `choices` (longest first, after
//! `regexes_to_ignore`, lower-casing and punctuation removal as configured) mapped to `(A)`,
//! `(B)`, …; else a bare letter after a colon (`: B`) mapped to `(B)`; else the fallback.

use std::collections::HashMap;

use serde_json::Value;

use super::findall;

pub struct MultiChoice {
    pub re: fancy_regex::Regex,
    pub group_select: i64,
    pub fallback: String,
    pub ignore_case: bool,
    pub ignore_punctuation: bool,
    pub ignore: Vec<fancy_regex::Regex>,
}

/// Unicode punctuation (general category P*), as lm-eval's translation table removes it.
fn punctuation() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r"\p{P}").expect("a valid class"))
}

/// lm-eval's `find_match`: the selected match, stripped and converted; "" when none.
fn find_match(
    re: &fancy_regex::Regex,
    text: &str,
    group_select: i64,
    convert: &HashMap<String, String>,
) -> String {
    let matches = findall(re, text);
    let idx = match group_select {
        i if i < 0 => matches.len() as i64 + i,
        i => i,
    };
    let Some(m) = usize::try_from(idx).ok().and_then(|i| matches.get(i)) else {
        return String::new();
    };
    let Some(m) = m.iter().find(|g| !g.is_empty()) else {
        return String::new();
    };
    let m = m.trim().to_string();
    convert.get(&m).cloned().unwrap_or(m)
}

impl MultiChoice {
    fn clean(&self, text: &str) -> String {
        let mut s = text.to_string();
        for re in &self.ignore {
            s = re.replace_all(&s, "").into_owned();
        }
        if self.ignore_case {
            s = s.to_lowercase();
        }
        if self.ignore_punctuation {
            s = punctuation().replace_all(&s, "").into_owned();
        }
        s
    }

    pub fn apply(
        &self,
        response: &str,
        doc: &serde_json::Map<String, Value>,
    ) -> Result<String, String> {
        let choices = doc
            .get("choices")
            .and_then(Value::as_array)
            .ok_or("multi_choice_regex: the document has no `choices` list")?;
        let mut branches = Vec::new();
        let mut to_letter = HashMap::new();
        let mut letters = Vec::new();
        let mut bare_to_letter = HashMap::new();
        for (i, c) in choices.iter().enumerate() {
            let letter = char::from_u32('A' as u32 + i as u32)
                .unwrap_or('?')
                .to_string();
            let text = c.as_str().map_or_else(|| c.to_string(), str::to_string);
            let m = self.clean(text.trim());
            branches.push(fancy_regex::escape(&m).into_owned());
            to_letter.insert(m, format!("({letter})"));
            bare_to_letter.insert(letter.clone(), format!("({letter})"));
            letters.push(letter);
        }
        // Longest first (a stable sort, as Python's): a choice that is a prefix of another
        // cannot shadow it.
        branches.sort_by_key(|b| std::cmp::Reverse(b.chars().count()));
        let compile = |p: &str| {
            fancy_regex::Regex::new(p).map_err(|e| format!("multi_choice_regex: `{p}`: {e}"))
        };
        let by_text = compile(&branches.join("|"))?;
        let by_letter = compile(&format!(r":[\s]*({})", letters.join("|")))?;
        let none = HashMap::new();
        let mut m = find_match(&self.re, response, self.group_select, &none);
        if m.is_empty() {
            m = find_match(
                &by_text,
                &self.clean(response),
                self.group_select,
                &to_letter,
            );
        }
        if m.is_empty() {
            m = find_match(&by_letter, response, self.group_select, &bare_to_letter);
        }
        Ok(if m.is_empty() {
            self.fallback.clone()
        } else {
            m
        })
    }
}
