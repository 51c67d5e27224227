//! `chat`: turns a `prompt` / `completion` pair of strings into a conversational row
//! `{"messages": [system?, user, assistant]}`, which the loader renders with the model's chat
//! template (loss on the assistant turn).

use serde_json::json;

use super::{text_field, JsonRow, Preprocessor};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chat {
    #[serde(default = "prompt")]
    prompt: String,
    #[serde(default = "completion")]
    completion: String,
    /// A system message put first.
    system: Option<String>,
}

fn prompt() -> String {
    "prompt".into()
}
fn completion() -> String {
    "completion".into()
}

impl Preprocessor for Chat {
    fn apply(&self, mut row: JsonRow) -> Result<Vec<JsonRow>, String> {
        let user = text_field(&row, &self.prompt)?;
        let assistant = text_field(&row, &self.completion)?;
        let mut messages = Vec::new();
        if let Some(s) = &self.system {
            messages.push(json!({"role": "system", "content": s}));
        }
        messages.push(json!({"role": "user", "content": user}));
        messages.push(json!({"role": "assistant", "content": assistant}));
        row.remove(&self.prompt);
        row.remove(&self.completion);
        row.insert("messages".into(), messages.into());
        Ok(vec![row])
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::row;
    use super::*;

    #[test]
    fn builds_messages() {
        let c: Chat = serde_json::from_value(json!({"system": "Be brief."})).unwrap();
        let out = c
            .apply(row(json!({"prompt": "Hi?", "completion": "Hello."})))
            .unwrap();
        assert_eq!(
            out[0],
            row(json!({"messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi?"},
                {"role": "assistant", "content": "Hello."}]}))
        );
        assert!(c
            .apply(row(json!({"prompt": "Hi?"})))
            .unwrap_err()
            .contains("completion"));
    }
}
