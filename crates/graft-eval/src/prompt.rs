//! `doc_to_text` / `doc_to_target` / `doc_to_choice` as lm-eval applies them (`api/task.py`,
//! `utils.py::apply_template`): a string naming a doc field gives that field; any other string is
//! a Jinja template (strict undefined, trailing newline kept, a `regex_replace` filter); ints and
//! lists are literals (a list's items are templates). Choices rendered from a template are read
//! as a Python list literal, as lm-eval's `ast.literal_eval`.

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value};

pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

/// Python methods lm-eval's templates call (Jinja2 there runs on Python objects): minijinja-contrib's
/// pycompat, plus `.index(x)` on lists and strings (arc_easy, arc_challenge, openbookqa:
/// `{{choices.label.index(answerKey)}}`), which raises when `x` is absent, as Python's does.
fn python_methods(
    state: &minijinja::State,
    value: &minijinja::Value,
    method: &str,
    args: &[minijinja::Value],
) -> Result<minijinja::Value, minijinja::Error> {
    use minijinja::value::ValueKind;
    let missing = |what: &dyn std::fmt::Display| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("ValueError: {what} is not in the {}", value.kind()),
        )
    };
    match (method, value.kind(), args) {
        ("index", ValueKind::Seq, [x]) => value
            .try_iter()?
            .position(|item| &item == x)
            .map(minijinja::Value::from)
            .ok_or_else(|| missing(x)),
        ("index", ValueKind::String, [x]) => {
            let (s, sub) = (
                value.as_str().unwrap_or_default(),
                x.as_str().unwrap_or_default(),
            );
            // Python counts characters, not bytes.
            s.find(sub)
                .map(|b| minijinja::Value::from(s[..b].chars().count()))
                .ok_or_else(|| missing(x))
        }
        _ => minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args),
    }
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.set_unknown_method_callback(python_methods);
        env.set_formatter(crate::pyrepr::formatter);
        env.add_filter(
            "regex_replace",
            |s: String, pattern: String, repl: String| -> Result<String, minijinja::Error> {
                let re = regex::Regex::new(&pattern).map_err(|e| {
                    minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
                })?;
                Ok(re
                    .replace_all(&s, repl.replace("\\", "$").as_str())
                    .to_string())
            },
        );
        Self { env }
    }

    fn render(&self, template: &str, doc: &Map<String, Value>) -> Result<String, String> {
        self.env
            .render_str(template, doc)
            .map_err(|e| format!("template `{template}`: {e}"))
    }

    /// Parses every template of a spec (a field name parses as plain text), so a syntax error
    /// shows before any data is read.
    pub fn compile(&self, spec: &Option<Value>) -> Result<(), String> {
        match spec {
            Some(Value::String(s)) => self
                .env
                .template_from_str(s)
                .map(|_| ())
                .map_err(|e| format!("template `{s}`: {e}")),
            Some(Value::Array(items)) => items
                .iter()
                .try_for_each(|i| self.compile(&Some(i.clone()))),
            Some(Value::Object(m)) => m.values().try_for_each(|i| self.compile(&Some(i.clone()))),
            _ => Ok(()),
        }
    }

    /// The prompt text of `doc`.
    pub fn text(&self, spec: &Option<Value>, doc: &Map<String, Value>) -> Result<String, String> {
        match spec {
            None => Ok(String::new()),
            Some(Value::String(s)) => match doc.get(s) {
                Some(Value::String(field)) => Ok(field.clone()),
                Some(other) => Ok(other.to_string()),
                None => self.render(s, doc),
            },
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(other) => Err(format!("expected a template, got {other}")),
        }
    }

    /// The target: a string, or an index into the choices (a rendered all-digit string with
    /// choices present becomes an index, as lm-eval's `ast.literal_eval`).
    pub fn target(
        &self,
        spec: &Option<Value>,
        doc: &Map<String, Value>,
        has_choices: bool,
    ) -> Result<Value, String> {
        let raw = match spec {
            None => return Err("doc_to_target: missing".into()),
            Some(Value::String(s)) => match doc.get(s) {
                Some(v) => v.clone(),
                None => Value::String(self.render(s, doc)?),
            },
            Some(v) => v.clone(),
        };
        let rendered = matches!(spec, Some(Value::String(s)) if !doc.contains_key(s));
        Ok(match raw {
            Value::String(s)
                if has_choices && !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Value::from(s.parse::<u64>().map_err(|e| e.to_string())?)
            }
            // A rendered list (`{{answers}}`) is read back as a list, as lm-eval's
            // `ast.literal_eval`; text that does not parse stays text.
            Value::String(s)
                if rendered && s.len() >= 2 && s.starts_with('[') && s.ends_with(']') =>
            {
                match python_list(&s) {
                    Ok(items) => Value::from(items),
                    Err(_) => Value::String(s),
                }
            }
            v => v,
        })
    }

    /// The choices of `doc`.
    pub fn choices(
        &self,
        spec: &Option<Value>,
        doc: &Map<String, Value>,
    ) -> Result<Vec<String>, String> {
        let strings = |v: &Value| -> Result<Vec<String>, String> {
            let a = v
                .as_array()
                .ok_or_else(|| format!("choices: expected a list, got {v}"))?;
            Ok(a.iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect())
        };
        match spec {
            None => Err("doc_to_choice: missing".into()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| self.text(&Some(i.clone()), doc))
                .collect(),
            Some(Value::Object(m)) => m
                .values()
                .map(|i| self.text(&Some(i.clone()), doc))
                .collect(),
            Some(Value::String(s)) => {
                if let Some(v) = doc.get(s) {
                    return strings(v);
                }
                // `{{ expr }}`: evaluate the expression itself (a list stays a list).
                let t = s.trim();
                if let Some(expr) = t.strip_prefix("{{").and_then(|x| x.strip_suffix("}}")) {
                    if !expr.contains("}}") {
                        let e = self
                            .env
                            .compile_expression(expr)
                            .map_err(|e| format!("template `{s}`: {e}"))?;
                        let v = e.eval(doc).map_err(|e| format!("template `{s}`: {e}"))?;
                        let json = serde_json::to_value(&v).map_err(|e| e.to_string())?;
                        if json.is_array() {
                            return strings(&json);
                        }
                    }
                }
                python_list(&self.render(s, doc)?)
            }
            Some(other) => Err(format!(
                "doc_to_choice: expected a template or a list, got {other}"
            )),
        }
    }
}

/// A Python list literal of strings/numbers (`['a', "b", 3]`).
fn python_list(text: &str) -> Result<Vec<String>, String> {
    let bad = || format!("choices `{text}`: not a list literal");
    let t = text.trim();
    let inner = t
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .ok_or_else(bad)?;
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        if c == '\'' || c == '"' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next().ok_or_else(bad)? {
                    '\\' => {
                        let e = chars.next().ok_or_else(bad)?;
                        s.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                    }
                    q if q == c => break,
                    other => s.push(other),
                }
            }
            out.push(s);
        } else {
            let mut s = String::new();
            while chars.peek().is_some_and(|c| *c != ',') {
                s.push(chars.next().unwrap_or(','));
            }
            // A literal, as ast.literal_eval takes it: a number, True, False or None.
            let s = s.trim().to_string();
            if s.parse::<f64>().is_err() && !["True", "False", "None"].contains(&s.as_str()) {
                return Err(bad());
            }
            out.push(s);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Map<String, Value> {
        json!({"question": "q?", "choices": ["a b", "c"], "label": 1, "n": "2"})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn renders_like_lm_eval() {
        let t = Templates::new();
        let d = doc();
        assert_eq!(
            t.text(&Some(json!("{{question}}\nanswer")), &d).unwrap(),
            "q?\nanswer"
        );
        assert_eq!(t.text(&Some(json!("question")), &d).unwrap(), "q?");
        assert_eq!(
            t.target(&Some(json!("{{label}}")), &d, true).unwrap(),
            json!(1)
        );
        assert_eq!(
            t.target(&Some(json!("{{n}}")), &d, false).unwrap(),
            json!("2")
        );
        assert_eq!(
            t.choices(&Some(json!("{{choices}}")), &d).unwrap(),
            vec!["a b", "c"]
        );
        assert_eq!(
            t.choices(&Some(json!(["yes", "{{n}}"])), &d).unwrap(),
            vec!["yes", "2"]
        );
        assert_eq!(
            python_list("['a', \"b, c\", 3]").unwrap(),
            vec!["a", "b, c", "3"]
        );
        assert!(t
            .text(&Some(json!("{{missing}}")), &d)
            .unwrap_err()
            .contains("missing"));
    }

    #[test]
    fn python_index_works_as_in_lm_evals_arc_templates() {
        // arc_easy.yaml (lm-eval 0.4.13): doc_to_target "{{choices.label.index(answerKey)}}",
        // doc_to_choice "{{choices.text}}"; the document shape of allenai/ai2_arc.
        let t = Templates::new();
        let d = json!({"question": "Which?", "answerKey": "C",
            "choices": {"text": ["one", "two", "three", "four"], "label": ["A", "B", "C", "D"]}});
        let d = d.as_object().unwrap();
        let target = Some(json!("{{choices.label.index(answerKey)}}"));
        assert_eq!(t.target(&target, d, true).unwrap(), json!(2));
        assert_eq!(
            t.choices(&Some(json!("{{choices.text}}")), d).unwrap(),
            vec!["one", "two", "three", "four"]
        );
        // str.index counts characters; an absent item is Python's ValueError, as an error.
        let s = json!({"s": "héllo", "k": "Z", "l": ["A"]});
        let s = s.as_object().unwrap();
        assert_eq!(t.text(&Some(json!("{{s.index('l')}}")), s).unwrap(), "2");
        let e = t.text(&Some(json!("{{l.index(k)}}")), s).unwrap_err();
        assert!(e.contains("ValueError"), "{e}");
        // pycompat's methods still work.
        assert_eq!(t.text(&Some(json!("{{' x '.strip()}}")), s).unwrap(), "x");
    }

    #[test]
    fn a_rendered_list_target_is_a_list_as_lm_evals_literal_eval() {
        let t = Templates::new();
        let doc = json!({"answers": ["it's", "b"], "s": "[not a list"});
        let doc = doc.as_object().unwrap();
        let spec = |s: &str| Some(Value::String(s.into()));
        assert_eq!(
            t.target(&spec("{{answers}}"), doc, false).unwrap(),
            json!(["it's", "b"])
        );
        // A field named directly keeps its value; text that is no list literal stays text.
        assert_eq!(
            t.target(&spec("answers"), doc, false).unwrap(),
            json!(["it's", "b"])
        );
        assert_eq!(
            t.target(&spec("{{s}}]"), doc, false).unwrap(),
            json!("[not a list]")
        );
    }
}
