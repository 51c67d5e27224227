//! TRL's dataset shapes and how each becomes a training example, as TRL's SFTTrainer tokenizes them:
//! - `{"text"}`: the whole text, EOS appended so the model learns to stop;
//! - `{"prompt", "completion"}`: the completion (EOS appended) is the target, the prompt is context;
//! - `{"messages"}`: the model's chat template renders the conversation; assistant turns are the
//!   targets, located by offsets in the rendering (see [`ChatTemplate::render_with_assistant_spans`]),
//!   their end-of-turn tokens included.
//!
//! Shapes: `input_ids` (T); `targets` (T): `targets[i]` = token `i` is in the loss (predicted from
//! tokens `..i`); `targets[0]` is always false.

use graft_models::Tokenizer;
use serde_json::{Map, Value};

use crate::chat::{parse_messages, ChatTemplate, Message};

#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Text(String),
    PromptCompletion {
        prompt: String,
        completion: String,
    },
    Messages(Vec<Message>),
    /// `{"prompt", "chosen", "rejected"}`: plain strings, or conversational (message lists).
    Preference {
        prompt: Turns,
        chosen: Turns,
        rejected: Turns,
    },
    /// `{"prompt", "responses": [...], "scores": [...]}`: a ranked list (LiPO), two or more
    /// responses, each scored (higher is better).
    Listwise {
        prompt: Turns,
        responses: Vec<Turns>,
        scores: Vec<f64>,
    },
}

/// A preference row's part: a plain string or a list of messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Turns {
    Text(String),
    Messages(Vec<Message>),
}

/// TRL's `extract_prompt`: the first position where chosen and rejected differ ends the prompt (one
/// character earlier when the character before it is a space); when one is a prefix of the other,
/// Python's loop variable stops at the last compared position, and TRL's prompt ends there too.
fn extract_prompt(chosen: &Turns, rejected: &Turns) -> Result<(Turns, Turns, Turns), String> {
    fn split<T: PartialEq + Clone>(
        c: &[T],
        r: &[T],
        is_space: impl Fn(&T) -> bool,
    ) -> Option<(Vec<T>, Vec<T>, Vec<T>)> {
        let n = c.len().min(r.len());
        if n == 0 {
            return None;
        }
        // Python semantics: idx may end at −1, and v[..idx] / v[idx..] then count from the end.
        let mut idx = n as i64 - 1;
        for i in 0..n {
            if c[i] != r[i] {
                idx = i as i64;
                let before = if i == 0 { &c[c.len() - 1] } else { &c[i - 1] };
                if is_space(before) {
                    idx -= 1;
                }
                break;
            }
        }
        let at = |v: &[T]| {
            if idx < 0 {
                v.len().saturating_sub(1)
            } else {
                (idx as usize).min(v.len())
            }
        };
        Some((
            c[..at(c)].to_vec(),
            c[at(c)..].to_vec(),
            r[at(r)..].to_vec(),
        ))
    }
    // TRL would take an empty prompt here; two responses to different prompts are not a preference.
    let mismatch = || {
        "fields `chosen`/`rejected`: no prompt, and they differ from the start (prompt mismatch)"
            .to_string()
    };
    let none = || {
        "fields `chosen`/`rejected`: no prompt, and no common prefix to take it from".to_string()
    };
    match (chosen, rejected) {
        (Turns::Text(c), Turns::Text(r)) => {
            let (c, r): (Vec<char>, Vec<char>) = (c.chars().collect(), r.chars().collect());
            let (p, c, r) = split(&c, &r, |ch| *ch == ' ').ok_or_else(none)?;
            if p.is_empty() {
                return Err(mismatch());
            }
            let s = |v: Vec<char>| Turns::Text(v.into_iter().collect());
            Ok((s(p), s(c), s(r)))
        }
        (Turns::Messages(c), Turns::Messages(r)) => {
            let (p, c, r) = split(c, r, |_| false).ok_or_else(none)?;
            if p.is_empty() {
                return Err(mismatch());
            }
            Ok((Turns::Messages(p), Turns::Messages(c), Turns::Messages(r)))
        }
        _ => Err("fields `chosen`/`rejected`: mix plain strings and message lists".into()),
    }
}

/// Which shape a JSON row has; errors name the field.
pub fn parse_row(obj: &Map<String, Value>) -> Result<Row, String> {
    let string = |key: &str| -> Result<String, String> {
        obj[key]
            .as_str()
            .map(str::to_string)
            .ok_or(format!("field `{key}`: not a string"))
    };
    let turns = |key: &str, v: Option<&Value>| -> Result<Turns, String> {
        match v {
            Some(Value::String(s)) => Ok(Turns::Text(s.clone())),
            Some(v @ Value::Array(_)) => parse_messages(v)
                .map(Turns::Messages)
                .map_err(|e| format!("field `{key}`: {e}")),
            Some(_) => Err(format!("field `{key}`: not a string or a list of messages")),
            None => Err(format!("field `{key}`: missing")),
        }
    };
    let empty = |t: &Turns| match t {
        Turns::Text(s) => s.trim().is_empty(),
        Turns::Messages(m) => m.is_empty(),
    };
    let conversational = |t: &Turns| matches!(t, Turns::Messages(_));
    if obj.contains_key("responses") {
        let prompt = turns("prompt", obj.get("prompt"))?;
        let list = obj["responses"]
            .as_array()
            .ok_or("field `responses`: not a list")?;
        let responses = list
            .iter()
            .enumerate()
            .map(|(i, v)| turns(&format!("responses[{i}]"), Some(v)))
            .collect::<Result<Vec<_>, _>>()?;
        let scores = obj
            .get("scores")
            .and_then(Value::as_array)
            .ok_or("field `scores`: missing or not a list")?
            .iter()
            .map(|v| v.as_f64().filter(|x| x.is_finite()))
            .collect::<Option<Vec<f64>>>()
            .ok_or("field `scores`: not all finite numbers")?;
        if responses.len() < 2 {
            return Err(format!(
                "field `responses`: {} response(s); a list needs two or more to rank",
                responses.len()
            ));
        }
        if scores.len() != responses.len() {
            return Err(format!(
                "fields `responses`/`scores`: {} responses but {} scores",
                responses.len(),
                scores.len()
            ));
        }
        if let Some(i) = responses.iter().position(empty) {
            return Err(format!("field `responses[{i}]`: empty response"));
        }
        if scores.iter().all(|&x| x == scores[0]) {
            return Err("field `scores`: all equal, nothing to rank".into());
        }
        if responses
            .iter()
            .any(|r| conversational(r) != conversational(&prompt))
        {
            return Err("fields `prompt`/`responses`: mix plain strings and message lists".into());
        }
        return Ok(Row::Listwise {
            prompt,
            responses,
            scores,
        });
    }
    if obj.contains_key("chosen") || obj.contains_key("rejected") {
        let part = |key: &str| turns(key, obj.get(key));
        let (chosen, rejected) = (part("chosen")?, part("rejected")?);
        // TRL's maybe_extract_prompt: without a prompt of the same kind as the responses, the
        // prompt is the responses' common prefix.
        let explicit = match obj.get("prompt") {
            Some(_) => Some(part("prompt")?),
            None => None,
        };
        let (prompt, chosen, rejected) = match explicit {
            Some(p) if conversational(&p) == conversational(&chosen) => (p, chosen, rejected),
            _ => extract_prompt(&chosen, &rejected)?,
        };
        if empty(&chosen) || empty(&rejected) {
            return Err(format!(
                "field `{}`: empty response",
                if empty(&chosen) { "chosen" } else { "rejected" }
            ));
        }
        if chosen == rejected {
            return Err("fields `chosen`/`rejected`: identical, nothing to prefer".into());
        }
        if conversational(&chosen) != conversational(&rejected)
            || conversational(&chosen) != conversational(&prompt)
        {
            return Err(
                "fields `prompt`/`chosen`/`rejected`: mix plain strings and message lists".into(),
            );
        }
        return Ok(Row::Preference {
            prompt,
            chosen,
            rejected,
        });
    }
    if obj.contains_key("messages") {
        let messages = parse_messages(&obj["messages"])?;
        if messages.is_empty() {
            return Err("field `messages`: empty".into());
        }
        if !messages.iter().any(|m| m.role == "assistant") {
            return Err("field `messages`: no assistant message to learn from".into());
        }
        return Ok(Row::Messages(messages));
    }
    if obj.contains_key("prompt") && obj.contains_key("completion") {
        return Ok(Row::PromptCompletion {
            prompt: string("prompt")?,
            completion: string("completion")?,
        });
    }
    if obj.contains_key("text") {
        return Ok(Row::Text(string("text")?));
    }
    Err("no `text`, `prompt`/`completion` or `messages` field".into())
}

#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub input_ids: Vec<u32>,
    pub targets: Vec<bool>,
}

impl Example {
    pub fn num_targets(&self) -> usize {
        self.targets.iter().filter(|&&t| t).count()
    }
}

/// Turns rows into examples with one tokenizer and (for chat rows) one template.
pub struct Tokenize<'a> {
    pub tokenizer: &'a Tokenizer,
    pub template: Option<&'a ChatTemplate>,
    /// Longer examples are cut to this many tokens.
    pub max_len: usize,
}

impl Tokenize<'_> {
    /// The chosen and rejected sequences of a preference row (see [`Self::responses`]).
    pub fn preference(&self, row: &Row) -> Result<(Example, Example), String> {
        let Row::Preference {
            prompt,
            chosen,
            rejected,
        } = row
        else {
            return Err(
                "this objective needs preference rows: {\"prompt\", \"chosen\", \"rejected\"}"
                    .into(),
            );
        };
        let mut both = self.responses(prompt, &[chosen.clone(), rejected.clone()])?;
        let rejected = both.pop().expect("two");
        Ok((both.pop().expect("two"), rejected))
    }

    /// A listwise row's responses (tokenized as [`Self::preference`] tokenizes a pair) and scores.
    pub fn listwise(&self, row: &Row) -> Result<(Vec<Example>, Vec<f64>), String> {
        match row {
            Row::Listwise {
                prompt,
                responses,
                scores,
            } => Ok((self.responses(prompt, responses)?, scores.clone())),
            Row::Preference { prompt, chosen, rejected } => Ok((
                self.responses(prompt, &[chosen.clone(), rejected.clone()])?,
                vec![1.0, 0.0],
            )),
            _ => Err("this objective needs listwise rows {\"prompt\", \"responses\", \"scores\"} or preference pairs".into()),
        }
    }

    /// Prompt + each response as TRL 1.16's DPOTrainer builds a pair's sequences: plain strings get
    /// the tokenizer's EOS after each response and are tokenized as prompt + response (special
    /// tokens added, so BOS leads); conversational rows render the prompt with a generation prompt
    /// and each response as the rest of the full rendering. The shared prompt is the shortest
    /// common prefix of the prompt's tokens with any sequence; targets are the rest.
    fn responses(&self, prompt: &Turns, responses: &[Turns]) -> Result<Vec<Example>, String> {
        let err = |e: graft_models::ModelError| e.to_string();
        let t = self.tokenizer;
        let mixed = || "fields `prompt`/responses: mix plain strings and message lists".to_string();
        let (prompt_ids, seqs) = match prompt {
            Turns::Text(p) => {
                let seqs = responses
                    .iter()
                    .map(|r| match r {
                        Turns::Text(r) => {
                            Ok(self.with_eos(t.encode(&format!("{p}{r}"), true).map_err(err)?))
                        }
                        Turns::Messages(_) => Err(mixed()),
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                (t.encode(p, true).map_err(err)?, seqs)
            }
            Turns::Messages(p) => {
                let template = self
                    .template
                    .ok_or("the model has no chat template for conversational rows")?;
                let (bos, eos) = (t.bos_token.as_deref(), t.eos_token.as_deref());
                let render = |extra: &[Message], gen: bool| -> Result<String, String> {
                    let all: Vec<Message> = p.iter().chain(extra).cloned().collect();
                    template
                        .render(&all, gen, bos, eos)
                        .map_err(|e| e.to_string())
                };
                let seqs = responses
                    .iter()
                    .map(|r| match r {
                        Turns::Messages(r) => t.encode(&render(r, false)?, false).map_err(err),
                        Turns::Text(_) => Err(mixed()),
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                (t.encode(&render(&[], true)?, false).map_err(err)?, seqs)
            }
        };
        let common = |a: &[u32], b: &[u32]| a.iter().zip(b).take_while(|(x, y)| x == y).count();
        let prompt_len = seqs
            .iter()
            .map(|s| common(&prompt_ids, s))
            .min()
            .unwrap_or(0);
        seqs.into_iter()
            .map(|ids| {
                let n = ids.len().min(self.max_len);
                let targets: Vec<bool> = (0..n).map(|i| i >= prompt_len.max(1)).collect();
                let ex = Example {
                    input_ids: ids[..n].to_vec(),
                    targets,
                };
                if ex.num_targets() == 0 {
                    return Err(format!(
                        "no response tokens within max_seq_len = {}",
                        self.max_len
                    ));
                }
                Ok(ex)
            })
            .collect()
    }

    fn with_eos(&self, mut ids: Vec<u32>) -> Vec<u32> {
        if let Some(eos) = self.tokenizer.eos_id {
            if ids.last() != Some(&eos) {
                ids.push(eos);
            }
        }
        ids
    }

    pub fn example(&self, row: &Row) -> Result<Example, String> {
        let err = |e: graft_models::ModelError| e.to_string();
        let (input_ids, mut targets) = match row {
            Row::Listwise { .. } => {
                return Err("a listwise row ({prompt, responses, scores}) needs a listwise objective (lipo)".into())
            }
            Row::Preference { .. } => {
                return Err("a preference row ({prompt, chosen, rejected}) needs a preference objective (dpo, cdpo, ipo, slic, simpo)".into())
            }
            Row::Text(text) => {
                let ids = self.with_eos(self.tokenizer.encode(text, true).map_err(err)?);
                let n = ids.len();
                (ids, vec![true; n])
            }
            Row::PromptCompletion { prompt, completion } => {
                // TRL: the context is the common prefix of the prompt's own tokenization and the
                // whole row's (a token merged across the boundary counts as completion).
                let prompt_ids = self.tokenizer.encode(prompt, true).map_err(err)?;
                let ids = self.with_eos(
                    self.tokenizer
                        .encode(&format!("{prompt}{completion}"), true)
                        .map_err(err)?,
                );
                let prompt_len = prompt_ids
                    .iter()
                    .zip(&ids)
                    .take_while(|(a, b)| a == b)
                    .count();
                let targets = (0..ids.len()).map(|i| i >= prompt_len).collect();
                (ids, targets)
            }
            Row::Messages(messages) => {
                let template = self
                    .template
                    .ok_or("the model has no chat template for `messages` rows")?;
                let t = self.tokenizer;
                let rendered = template
                    .render_with_assistant_spans(
                        messages,
                        t.bos_token.as_deref(),
                        t.eos_token.as_deref(),
                    )
                    .map_err(|e| e.to_string())?;
                // The template writes any BOS itself, as apply_chat_template assumes.
                let (ids, offsets) = t.encode_with_offsets(&rendered.text, false).map_err(err)?;
                let targets = offsets
                    .iter()
                    .map(|&(start, end)| {
                        end > start
                            && rendered
                                .assistant_spans
                                .iter()
                                .any(|&(a, b)| start >= a && start < b)
                    })
                    .collect();
                (ids, targets)
            }
        };
        if input_ids.is_empty() {
            return Err("the row has no tokens".into());
        }
        targets[0] = false;
        let n = input_ids.len().min(self.max_len);
        let ex = Example {
            input_ids: input_ids[..n].to_vec(),
            targets: targets[..n].to_vec(),
        };
        if ex.num_targets() == 0 {
            return Err(format!(
                "no target tokens within max_seq_len = {}",
                self.max_len
            ));
        }
        Ok(ex)
    }
}
