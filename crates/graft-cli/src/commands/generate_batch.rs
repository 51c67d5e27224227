//! `graft generate --input prompts.jsonl --samples N --output out.jsonl`: N sampled responses per
//! prompt row, written as `{"prompt", "responses"}` — the candidates RSO draws from once a reward
//! model has added `scores`. Plain-string prompts are continued (BOS added as the tokenizer adds
//! it); message-list prompts are rendered with the chat template and a generation prompt, and
//! their responses written as assistant messages. Sample k of row i uses seed (seed, i, k).

use std::path::Path;

use anyhow::{bail, Context, Result};
use graft_data::{parse_messages, ChatTemplate};
use graft_serve::{generate_batch, GenerateOptions};
use serde_json::{json, Value};

use crate::io::{progress, write_atomic};
use graft_models::Model;

pub fn run(args: &super::generate::Args, input: &Path) -> Result<()> {
    let output = args.output.as_ref().context("--input needs --output")?;
    crate::io::claim_outputs(&[output], &[input])?;
    if args.samples == 0 {
        bail!("--samples: must be ≥ 1");
    }
    if args.samples > 1 && args.temperature == 0.0 {
        bail!(
            "--samples {}: greedy decoding gives one answer; set --temperature",
            args.samples
        );
    }
    let rows = super::data::read(input, false)?;
    let (source, model, device) = args.model.load_any()?;
    let tokenizer = source.tokenizer()?;
    let template = tokenizer
        .chat_template
        .as_deref()
        .map(ChatTemplate::new)
        .transpose()?;
    let bar = progress((rows.len() * args.samples) as u64, "samples");
    let mut out = String::new();
    for (i, (line, row)) in rows.iter().enumerate() {
        let at = |m: &str| format!("{}:{line}: {m}", input.display());
        let prompt = row
            .get("prompt")
            .ok_or_else(|| anyhow::anyhow!(at("field `prompt`: missing")))?;
        let (ids, conversational) = match prompt {
            Value::String(p) => (tokenizer.encode(p, true)?, false),
            Value::Array(_) => {
                let messages = parse_messages(prompt)
                    .map_err(|e| anyhow::anyhow!(at(&format!("field `prompt`: {e}"))))?;
                let template = template.as_ref().with_context(|| {
                    at("a message-list prompt, and the model has no chat template")
                })?;
                let text = template.render(
                    &messages,
                    true,
                    tokenizer.bos_token.as_deref(),
                    tokenizer.eos_token.as_deref(),
                )?;
                (tokenizer.encode(&text, false)?, true)
            }
            _ => bail!(at("field `prompt`: not a string or a list of messages")),
        };
        // The row's samples decode together, from one prefill of the prompt.
        let opts: Vec<GenerateOptions> = (0..args.samples)
            .map(|k| GenerateOptions {
                max_new_tokens: args.max_new_tokens,
                temperature: args.temperature,
                top_p: args.top_p,
                seed: args.seed
                    ^ ((i * args.samples + k) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                eos_token_ids: match &model {
                    Model::Seq2Seq(t5) => t5.cfg.eos_ids(),
                    Model::Decoder(_) => source.generation.eos_token_ids.clone(),
                },
            })
            .collect();
        let prompts = vec![&ids[..]; args.samples];
        let mut responses = Vec::with_capacity(args.samples);
        for (generated, _) in generate_batch(&model, &prompts, &opts, &device)? {
            let text = tokenizer.decode(&generated, true)?;
            responses.push(match conversational {
                true => json!([{"role": "assistant", "content": text}]),
                false => json!(text),
            });
            bar.inc(1);
        }
        out.push_str(&json!({"prompt": prompt, "responses": responses}).to_string());
        out.push('\n');
    }
    bar.finish_and_clear();
    write_atomic(output, out.as_bytes())?;
    eprintln!(
        "{} prompts × {} samples → {}",
        rows.len(),
        args.samples,
        output.display()
    );
    Ok(())
}
