//! The tokenizer of a model path: HF's `tokenizer.json` run by the `tokenizers` crate (the same Rust
//! code transformers uses), plus what `tokenizer_config.json` adds — the BOS/EOS tokens and the
//! chat template. GGUF files rebuild the same thing from their metadata (`gguf_tokenizer.rs`).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{ModelError, Result};

/// A token's byte range in the encoded text.
pub type Span = (usize, usize);

#[derive(Clone)]
pub struct Tokenizer {
    pub inner: tokenizers::Tokenizer,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub chat_template: Option<String>,
    /// Where it came from, for error messages.
    pub source: PathBuf,
}

/// `tokenizer_config.json` stores special tokens as a string or as an AddedToken dict.
fn token_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` (+ `tokenizer_config.json`, `chat_template.jinja` when present) from `dir`.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(ModelError::file(
                &path,
                "missing: the model directory has no tokenizer.json",
            ));
        }
        // tokenizers panics on some malformed files (a truncated decoder section): an error here.
        let inner =
            crate::guard::catch("tokenizer.json", || tokenizers::Tokenizer::from_file(&path))
                .map_err(|e| ModelError::file(&path, e))?
                .map_err(|e| ModelError::file(&path, e))?;
        let config_path = dir.join("tokenizer_config.json");
        let config: Value = if config_path.exists() {
            let text = std::fs::read_to_string(&config_path)
                .map_err(|e| ModelError::file(&config_path, e))?;
            serde_json::from_str(&text)
                .map_err(|e| ModelError::file(&config_path, format!("invalid JSON: {e}")))?
        } else {
            Value::Null
        };
        let mut chat_template = match config.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: the one called "default".
            Some(Value::Array(items)) => items
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        };
        let jinja = dir.join("chat_template.jinja");
        if chat_template.is_none() && jinja.exists() {
            chat_template =
                Some(std::fs::read_to_string(&jinja).map_err(|e| ModelError::file(&jinja, e))?);
        }
        let bos_token = token_string(config.get("bos_token"));
        let eos_token = token_string(config.get("eos_token"));
        let id = |t: &Option<String>| t.as_deref().and_then(|t| inner.token_to_id(t));
        Ok(Self {
            bos_id: id(&bos_token),
            eos_id: id(&eos_token),
            bos_token,
            eos_token,
            chat_template,
            source: path,
            inner,
        })
    }

    /// Token ids of `text`; with `add_special`, as `tokenizer(text)` gives them in transformers 5:
    /// BOS/EOS come from `tokenizer.json`'s post-processor alone (transformers 5.24 ignores
    /// `add_bos_token` in `tokenizer_config.json`; checked for the generic, Llama and Gemma classes).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| ModelError::file(&self.source, e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids with each token's byte span in `text` (special tokens added by the post-processor
    /// get an empty span).
    pub fn encode_with_offsets(
        &self,
        text: &str,
        add_special: bool,
    ) -> Result<(Vec<u32>, Vec<Span>)> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| ModelError::file(&self.source, e))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| ModelError::file(&self.source, e))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}
