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
        Self { role: role.into(), content: content.into(), extra: Default::default() }
    }
}

/// Parses a `messages` array, naming the message and field at fault.
pub fn parse_messages(value: &serde_json::Value) -> Result<Vec<Message>, String> {
    let items = value.as_array().ok_or("`messages` is not a list")?;
    items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let obj = m.as_object().ok_or(format!("messages[{i}] is not an object"))?;
            let role = obj.get("role").and_then(|r| r.as_str()).ok_or(format!("messages[{i}].role is missing"))?;
            let content = obj.get("content").ok_or(format!("messages[{i}].content is missing"))?;
            let mut extra = obj.clone();
            extra.remove("role");
            extra.remove("content");
            Ok(Message { role: role.to_string(), content: content.clone(), extra })
        })
        .collect()
}

pub struct ChatTemplate {
    env: Environment<'static>,
}

fn raise_exception(msg: String) -> Result<String, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
}

impl ChatTemplate {
    pub fn new(template: &str) -> Result<Self, DataError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", template.to_string())
            .map_err(|e| DataError::Template(format!("chat template does not parse: {e}")))?;
        Ok(Self { env })
    }

    /// The prompt string, as `tokenizer.apply_chat_template(messages, tokenize=False, …)` gives it.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<String, DataError> {
        let tmpl = self.env.get_template("chat").map_err(|e| DataError::Template(e.to_string()))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token.unwrap_or(""),
            eos_token => eos_token.unwrap_or(""),
        })
        .map_err(|e| DataError::Template(format!("chat template failed: {e}")))
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
        let out = t.render(&[Message::new("user", "Hi")], true, None, None).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
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
        assert_eq!(t.render(&[Message::new("user", "  x  ")], false, None, None).unwrap(), "x");
    }

    #[test]
    fn missing_role_is_named() {
        let v = serde_json::json!([{"content": "x"}]);
        assert_eq!(parse_messages(&v).unwrap_err(), "messages[0].role is missing");
    }
}
