//! `rationale`: rows with an input, a rationale and a label (e.g. an LLM's chain of thought, for
//! distillation) as training rows, in one of two styles:
//! - `task_prefix` (Distilling step-by-step, Hsieh et al. 2023, run.py `task_prefix`): two rows,
//!   `{inputs: "predict: " + input, targets: label}` and `{inputs: "explain: " + input,
//!   targets: rationale}` — the multi-task form; one row each weighs the two losses equally, the
//!   paper's α = 0.5;
//! - `cot`: one row, `{inputs: input, targets: rationale + answer_prefix + label}` (rationale
//!   first, then the answer, as chain-of-thought exemplars are written).
//!
//! Output field names are `into` (default `["inputs", "targets"]`; `["prompt", "completion"]`
//! for decoder models).

use super::{text_field, JsonRow, Preprocessor};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rationale {
    #[serde(default = "input")]
    input: String,
    #[serde(default = "rationale")]
    rationale: String,
    #[serde(default = "label")]
    label: String,
    #[serde(default)]
    style: Style,
    #[serde(default = "answer_prefix")]
    answer_prefix: String,
    #[serde(default = "into")]
    into: [String; 2],
}

#[derive(serde::Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Style {
    #[default]
    TaskPrefix,
    Cot,
}

fn input() -> String {
    "input".into()
}
fn rationale() -> String {
    "rationale".into()
}
fn label() -> String {
    "label".into()
}
fn answer_prefix() -> String {
    " So the answer is ".into()
}
fn into() -> [String; 2] {
    ["inputs".into(), "targets".into()]
}

impl Preprocessor for Rationale {
    fn apply(&self, row: JsonRow) -> Result<Vec<JsonRow>, String> {
        let (x, r, y) = (
            text_field(&row, &self.input)?,
            text_field(&row, &self.rationale)?,
            text_field(&row, &self.label)?,
        );
        let pair = |i: String, t: String| {
            let mut out = JsonRow::new();
            out.insert(self.into[0].clone(), i.into());
            out.insert(self.into[1].clone(), t.into());
            out
        };
        Ok(match self.style {
            Style::TaskPrefix => vec![
                pair(format!("predict: {x}"), y),
                pair(format!("explain: {x}"), r),
            ],
            Style::Cot => vec![pair(x, format!("{r}{}{y}", self.answer_prefix))],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::row;
    use super::*;
    use serde_json::json;

    #[test]
    fn both_styles() {
        let r = row(
            json!({"input": "Is 7 prime?", "rationale": "7 has no divisors but 1 and 7.", "label": "yes"}),
        );
        let tp: Rationale = serde_json::from_value(json!({})).unwrap();
        assert_eq!(
            tp.apply(r.clone()).unwrap(),
            vec![
                row(json!({"inputs": "predict: Is 7 prime?", "targets": "yes"})),
                row(
                    json!({"inputs": "explain: Is 7 prime?", "targets": "7 has no divisors but 1 and 7."})
                ),
            ]
        );
        let cot: Rationale =
            serde_json::from_value(json!({"style": "cot", "into": ["prompt", "completion"]}))
                .unwrap();
        assert_eq!(
            cot.apply(r).unwrap(),
            vec![row(
                json!({"prompt": "Is 7 prime?", "completion": "7 has no divisors but 1 and 7. So the answer is yes"})
            )]
        );
    }
}
