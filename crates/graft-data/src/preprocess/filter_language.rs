//! `filter_language`: detects the language of `field` (whatlang's trigram model, ISO 639-3 codes
//! such as "ita", "eng", "deu", "fin", "kor") and keeps rows in `languages` whose detection
//! confidence is at least `min_confidence`; with `into`, also writes the detected code (or "und"
//! when nothing is detected) to that field — for `graft data stats --group-by` — and with no
//! `languages`, only annotates.

use super::filter_length::field_text;
use super::{JsonRow, Preprocessor};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    field: String,
    #[serde(default)]
    languages: Vec<String>,
    #[serde(default)]
    min_confidence: f64,
    into: Option<String>,
}

pub struct FilterLanguage {
    field: String,
    languages: Vec<whatlang::Lang>,
    min_confidence: f64,
    into: Option<String>,
}

impl FilterLanguage {
    pub fn new(p: Params) -> Result<Self, String> {
        let languages = p
            .languages
            .iter()
            .map(|c| {
                whatlang::Lang::from_code(c).ok_or(format!(
                    "languages: `{c}` is not an ISO 639-3 code whatlang knows (e.g. \"ita\", \"eng\")"
                ))
            })
            .collect::<Result<_, _>>()?;
        if p.languages.is_empty() && p.into.is_none() {
            return Err("give `languages` to filter or `into` to annotate".into());
        }
        if !(0.0..=1.0).contains(&p.min_confidence) {
            return Err("min_confidence: must be within [0, 1]".into());
        }
        Ok(Self {
            field: p.field,
            languages,
            min_confidence: p.min_confidence,
            into: p.into,
        })
    }
}

impl Preprocessor for FilterLanguage {
    fn apply(&self, mut row: JsonRow) -> Result<Vec<JsonRow>, String> {
        let info = whatlang::detect(&field_text(&row, &self.field)?);
        if !self.languages.is_empty() {
            let keep = info.as_ref().is_some_and(|i| {
                self.languages.contains(&i.lang()) && i.confidence() >= self.min_confidence
            });
            if !keep {
                return Ok(vec![]);
            }
        }
        if let Some(into) = &self.into {
            let code = info.map_or("und", |i| i.lang().code());
            row.insert(into.clone(), code.into());
        }
        Ok(vec![row])
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::row;
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_the_named_languages_and_annotates() {
        let f = FilterLanguage::new(
            serde_json::from_value(json!({"field": "t", "languages": ["ita"], "into": "lang"}))
                .unwrap(),
        )
        .unwrap();
        let it = row(
            json!({"t": "Nel mezzo del cammin di nostra vita mi ritrovai per una selva oscura, ché la diritta via era smarrita."}),
        );
        let en = row(
            json!({"t": "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife."}),
        );
        let out = f.apply(it).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["lang"], "ita");
        assert!(f.apply(en).unwrap().is_empty());
        let bad = serde_json::from_value(json!({"field": "t", "languages": ["italian"]})).unwrap();
        assert!(FilterLanguage::new(bad).err().unwrap().contains("italian"));
    }
}
