//! Chat templates: HF's Jinja templates rendered unmodified with minijinja, configured as
//! transformers configures jinja2 (`trim_blocks`, `lstrip_blocks`, `raise_exception`, Python string
//! methods such as `.strip()` through minijinja-contrib's pycompat).

use minijinja::{context, Environment, Error as JinjaError, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::DataError;

/// One chat turn in TRL's conversational shape. Extra keys (tool calls, names) are kept for the template.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: serde_json::Value,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            extra: Default::default(),
        }
    }
}

/// Parses a `messages` array, naming the message and field at fault.
pub fn parse_messages(value: &serde_json::Value) -> Result<Vec<Message>, String> {
    let items = value.as_array().ok_or("`messages` is not a list")?;
    items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let obj = m
                .as_object()
                .ok_or(format!("messages[{i}] is not an object"))?;
            let role = obj
                .get("role")
                .and_then(|r| r.as_str())
                .ok_or(format!("messages[{i}].role is missing"))?;
            let content = obj
                .get("content")
                .ok_or(format!("messages[{i}].content is missing"))?;
            let mut extra = obj.clone();
            extra.remove("role");
            extra.remove("content");
            Ok(Message {
                role: role.to_string(),
                content: content.clone(),
                extra,
            })
        })
        .collect()
}

pub struct ChatTemplate {
    env: Environment<'static>,
    /// The template marks assistant output with `{% generation %}…{% endgeneration %}`.
    pub has_generation_markers: bool,
}

fn raise_exception(msg: String) -> Result<String, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
}

/// Private-use characters standing in for HF's `{% generation %}` / `{% endgeneration %}` tags,
/// which jinja2 gets from a transformers extension and minijinja does not know.
const GEN_START: char = '\u{E000}';
const GEN_END: char = '\u{E001}';

/// Rewrites the generation tags as expressions printing the sentinels, keeping the tags' whitespace
/// behaviour (`-` trims, and trim_blocks / lstrip_blocks as for any block tag).
fn replace_generation_tags(template: &str) -> (String, bool) {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut found = false;
    while let Some(open) = rest.find("{%") {
        // The closing `%}` comes after the opening `{%` (in `{%}` they overlap).
        let Some(close_rel) = rest[open + 2..].find("%}") else {
            break;
        };
        let inner = &rest[open + 2..open + 2 + close_rel];
        let close = open + 2 + close_rel + 2;
        let (trim_left, trim_right) = (inner.starts_with('-'), inner.ends_with('-'));
        let word = inner.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        let sentinel = match word {
            "generation" => GEN_START,
            "endgeneration" => GEN_END,
            _ => {
                out.push_str(&rest[..close]);
                rest = &rest[close..];
                continue;
            }
        };
        found = true;
        let mut before = &rest[..open];
        if !trim_left {
            // lstrip_blocks: spaces and tabs between a line start and a block tag go.
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            if before[line_start..].chars().all(|c| c == ' ' || c == '\t')
                && (line_start > 0 || out.is_empty() || out.ends_with('\n'))
            {
                before = &before[..line_start];
            }
        }
        out.push_str(before);
        out.push_str(&format!(
            "{{{{{} '{}' {}}}}}",
            if trim_left { "-" } else { "" },
            sentinel,
            if trim_right { "-" } else { "" }
        ));
        rest = &rest[close..];
        // trim_blocks: the first newline after a block tag goes.
        if !trim_right {
            rest = rest.strip_prefix('\n').unwrap_or(rest);
        }
    }
    out.push_str(rest);
    (out, found)
}

/// A rendered conversation and the byte ranges of its assistant turns (what the loss covers).
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub text: String,
    pub assistant_spans: Vec<(usize, usize)>,
}

impl ChatTemplate {
    pub fn new(template: &str) -> Result<Self, DataError> {
        let (source, has_generation_markers) = replace_generation_tags(template);
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source)
            .map_err(|e| DataError::Template(format!("chat template does not parse: {e}")))?;
        Ok(Self {
            env,
            has_generation_markers,
        })
    }

    fn render_raw(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        bos: Option<&str>,
        eos: Option<&str>,
    ) -> Result<String, DataError> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| DataError::Template(e.to_string()))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos.unwrap_or(""),
            eos_token => eos.unwrap_or(""),
        })
        .map_err(|e| DataError::Template(format!("chat template failed: {e}")))
    }

    /// The prompt string, as `tokenizer.apply_chat_template(messages, tokenize=False, …)` gives it.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<String, DataError> {
        let raw = self.render_raw(messages, add_generation_prompt, bos_token, eos_token)?;
        Ok(raw.replace([GEN_START, GEN_END], ""))
    }

    /// The whole conversation and its assistant spans. With generation markers, the spans are what
    /// the markers enclose (transformers' `return_assistant_tokens_mask`). Without, assistant turn `i`
    /// spans from the end of the rendering of `messages[..i]` with a generation prompt to the end of
    /// the rendering of `messages[..=i]`; a template for which these are not prefixes of the full
    /// rendering is refused rather than guessed at.
    pub fn render_with_assistant_spans(
        &self,
        messages: &[Message],
        bos: Option<&str>,
        eos: Option<&str>,
    ) -> Result<Rendered, DataError> {
        let raw = self.render_raw(messages, false, bos, eos)?;
        if self.has_generation_markers {
            let mut text = String::with_capacity(raw.len());
            let mut spans = Vec::new();
            let mut start = None;
            for c in raw.chars() {
                match c {
                    GEN_START => start = Some(text.len()),
                    GEN_END => {
                        if let Some(s) = start.take() {
                            spans.push((s, text.len()));
                        }
                    }
                    c => text.push(c),
                }
            }
            return Ok(Rendered {
                text,
                assistant_spans: spans,
            });
        }
        let text = raw;
        let mut spans = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let before = self.render(&messages[..i], true, bos, eos)?;
            let through = self.render(&messages[..=i], false, bos, eos)?;
            if !through.starts_with(&before) || !text.starts_with(&through) {
                return Err(DataError::Template(format!(
                    "cannot locate assistant message {i} in the rendering (the template renders earlier turns differently once later ones exist); add {{% generation %}} markers to the template"
                )));
            }
            spans.push((before.len(), through.len()));
        }
        Ok(Rendered {
            text,
            assistant_spans: spans,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The ChatML template SmolLM2-Instruct ships, and transformers' output for it.
    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_with_generation_prompt() {
        let t = ChatTemplate::new(CHATML).unwrap();
        let out = t
            .render(&[Message::new("user", "Hi")], true, None, None)
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn malformed_block_tags_are_errors_not_panics() {
        for t in ["{%}", "{%", "%}{%", "{%-%}", "{% generation %}{%}", "{%%}"] {
            // Either the template parses or it is an error; the tag scanner must not panic.
            let _ = ChatTemplate::new(t);
        }
        assert!(ChatTemplate::new("{%}").is_err());
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}").unwrap();
        let err = t.render(&[], false, None, None).unwrap_err().to_string();
        assert!(err.contains("roles must alternate"), "{err}");
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new("{{ messages[0]['content'].strip() }}").unwrap();
        assert_eq!(
            t.render(&[Message::new("user", "  x  ")], false, None, None)
                .unwrap(),
            "x"
        );
    }

    #[test]
    fn missing_role_is_named() {
        let v = serde_json::json!([{"content": "x"}]);
        assert_eq!(
            parse_messages(&v).unwrap_err(),
            "messages[0].role is missing"
        );
    }
}
