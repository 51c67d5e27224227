//! lm-eval's response filters (`filters/extraction.py` `RegexFilter`, `WhitespaceFilter`,
//! `MultiChoiceRegexFilter`; `filters/selection.py` `TakeFirstFilter`): a named pipeline per
//! `filter_list` entry turns a document's responses into the one the metrics score; without a
//! `filter_list` the pipeline is `none` = take_first.

mod multi_choice;

use serde_json::{Map, Value};

use crate::lm_eval_yaml::FilterStep;

pub enum Step {
    /// `re.findall`, then match `group_select` (negative from the end); a tuple of groups gives
    /// its first non-empty one; stripped; `fallback` when nothing matches.
    Regex {
        re: fancy_regex::Regex,
        group_select: i64,
        fallback: String,
    },
    TakeFirst,
    /// `remove_whitespace`: Python's `str.strip()`.
    Strip,
    MultiChoice(multi_choice::MultiChoice),
}

pub struct Pipeline {
    pub name: String,
    pub steps: Vec<Step>,
}

impl Pipeline {
    pub fn none() -> Self {
        Self {
            name: "none".into(),
            steps: vec![Step::TakeFirst],
        }
    }

    pub fn new(name: &str, steps: &[FilterStep]) -> Result<Self, String> {
        let steps = steps
            .iter()
            .map(|s| match s.function.as_str() {
                "take_first" => Ok(Step::TakeFirst),
                "remove_whitespace" => Ok(Step::Strip),
                "multi_choice_regex" => multi_choice_step(name, s),
                "regex" => {
                    // lm-eval's RegexFilter default is GSM8K's answer line.
                    let pattern = s
                        .regex_pattern
                        .clone()
                        .unwrap_or_else(|| r"#### (\-?[0-9\.\,]+)".into());
                    let re = fancy_regex::Regex::new(&pattern)
                        .map_err(|e| format!("filter `{name}`: regex_pattern `{pattern}`: {e}"))?;
                    Ok(Step::Regex {
                        re,
                        group_select: s.group_select.unwrap_or(0),
                        fallback: s.fallback.clone().unwrap_or_else(|| "[invalid]".into()),
                    })
                }
                other => Err(format!(
                    "filter `{name}`: function `{other}` is not supported (regex, multi_choice_regex, remove_whitespace, take_first)"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            name: name.into(),
            steps,
        })
    }

    /// The filtered response of one document's responses.
    pub fn apply(&self, responses: &[String], doc: &Map<String, Value>) -> Result<String, String> {
        let mut resps = responses.to_vec();
        for step in &self.steps {
            match step {
                Step::TakeFirst => resps.truncate(1),
                Step::Strip => resps = resps.iter().map(|r| r.trim().to_string()).collect(),
                Step::MultiChoice(m) => {
                    resps = resps
                        .iter()
                        .map(|r| m.apply(r, doc))
                        .collect::<Result<_, _>>()?
                }
                Step::Regex {
                    re,
                    group_select,
                    fallback,
                } => {
                    resps = resps
                        .iter()
                        .map(|r| regex_pick(re, *group_select, fallback, r))
                        .collect()
                }
            }
        }
        Ok(resps.into_iter().next().unwrap_or_default())
    }
}

fn multi_choice_step(name: &str, s: &FilterStep) -> Result<Step, String> {
    let compile = |p: &str| {
        fancy_regex::Regex::new(p).map_err(|e| format!("filter `{name}`: regex `{p}`: {e}"))
    };
    Ok(Step::MultiChoice(multi_choice::MultiChoice {
        re: compile(
            s.regex_pattern
                .as_deref()
                .unwrap_or(r"#### (\-?[0-9\.\,]+)"),
        )?,
        group_select: s.group_select.unwrap_or(0),
        fallback: s.fallback.clone().unwrap_or_else(|| "[invalid]".into()),
        ignore_case: s.ignore_case.unwrap_or(false),
        ignore_punctuation: s.ignore_punctuation.unwrap_or(false),
        ignore: s
            .regexes_to_ignore
            .iter()
            .flatten()
            .map(|p| compile(p))
            .collect::<Result<_, _>>()?,
    }))
}

/// Python's `re.findall`: per match, the whole match without groups, else every group.
fn findall(re: &fancy_regex::Regex, text: &str) -> Vec<Vec<String>> {
    let groups = re.captures_len() - 1;
    re.captures_iter(text)
        .filter_map(Result::ok)
        .map(|c| match groups {
            0 => vec![c.get(0).map_or("", |m| m.as_str()).to_string()],
            n => (1..=n)
                .map(|g| c.get(g).map_or("", |m| m.as_str()).to_string())
                .collect(),
        })
        .collect()
}

fn regex_pick(re: &fancy_regex::Regex, group_select: i64, fallback: &str, text: &str) -> String {
    let matches = findall(re, text);
    let idx = match group_select {
        i if i < 0 => matches.len() as i64 + i,
        i => i,
    };
    let Some(m) = usize::try_from(idx).ok().and_then(|i| matches.get(i)) else {
        return fallback.to_string();
    };
    match m.iter().find(|g| !g.is_empty()) {
        Some(g) => g.trim().to_string(),
        None if m.len() == 1 => String::new(),
        None => fallback.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graft_testkit::read_json;

    #[test]
    fn gsm8k_filters_match_lm_eval() {
        // tests/fixtures/eval/metrics_reference.json "gsm8k_filters": lm_eval 0.4.13 RegexFilter
        // with gsm8k.yaml's strict-match and flexible-extract settings.
        let r = read_json("eval/metrics_reference.json");
        let f = &r["gsm8k_filters"];
        let make = |k: &str| {
            let step = FilterStep {
                function: "regex".into(),
                regex_pattern: Some(f[k]["regex_pattern"].as_str().unwrap().into()),
                group_select: Some(f[k]["group_select"].as_i64().unwrap()),
                fallback: Some(f[k]["fallback"].as_str().unwrap().into()),
                ..Default::default()
            };
            Pipeline::new(
                k,
                &[
                    step,
                    FilterStep {
                        function: "take_first".into(),
                        ..Default::default()
                    },
                ],
            )
            .unwrap()
        };
        let (strict, flexible) = (make("strict_match"), make("flexible_extract"));
        let cases = f["cases"].as_array().unwrap();
        assert!(cases.len() >= 4);
        for c in cases {
            let input = vec![c["input"].as_str().unwrap().to_string()];
            assert_eq!(
                strict.apply(&input, &Map::new()).unwrap(),
                c["strict_match"].as_str().unwrap(),
                "{c}"
            );
            assert_eq!(
                flexible.apply(&input, &Map::new()).unwrap(),
                c["flexible_extract"].as_str().unwrap(),
                "{c}"
            );
        }
    }
}
