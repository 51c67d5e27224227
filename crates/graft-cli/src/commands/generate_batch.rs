//! `graft generate --input prompts.jsonl --samples N --output out.jsonl`: N sampled responses per
//! prompt row, written as `{"prompt", "responses"}` — the candidates RSO draws from once a reward
//! model has added `scores`. Plain-string prompts are continued (BOS added as the tokenizer adds
//! it); message-list prompts are rendered with the chat template and a generation prompt, and
//! their responses written as assistant messages. Sample k of row i uses seed (seed, i, k).
//! Rows decode together in batches of up to 16 sequences.

use std::path::Path;

use anyhow::{bail, Context, Result};
use graft_data::{parse_messages, ChatTemplate};
use graft_serve::{generate_batch, GenerateOptions};
use serde_json::{json, Value};

use crate::io::{progress, write_atomic};
use graft_models::Model;

/// Sequences decoded in one batch (more rows amortise each weight read over more tokens; the
/// KV cache grows with them).
const BATCH: usize = 16;

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
    // Every row is read and encoded before anything decodes: a bad row fails at once.
    let mut jobs = Vec::with_capacity(rows.len());
    for (line, row) in &rows {
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
        jobs.push((prompt, ids, conversational));
    }
    let options = |i: usize, k: usize| GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed ^ ((i * args.samples + k) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        eos_token_ids: match &model {
            Model::Seq2Seq(t5) => t5.cfg.eos_ids(),
            Model::Decoder(_) => source.generation.eos_token_ids.clone(),
        },
    };
    let bar = progress((rows.len() * args.samples) as u64, "samples");
    let mut responses: Vec<Vec<Value>> = vec![Vec::new(); jobs.len()];
    // Whole rows decode together, up to BATCH sequences (or one row's samples, if more): each
    // prompt is prefilled once, and each sample's tokens are the ones it would get alone.
    let rows_per_batch = (BATCH / args.samples).max(1);
    for (g, group) in jobs.chunks(rows_per_batch).enumerate() {
        let first = g * rows_per_batch;
        let seqs: Vec<(usize, usize)> = (0..group.len())
            .flat_map(|r| (0..args.samples).map(move |k| (first + r, k)))
            .collect();
        let prompts: Vec<&[u32]> = seqs.iter().map(|&(i, _)| &jobs[i].1[..]).collect();
        let opts: Vec<GenerateOptions> = seqs.iter().map(|&(i, k)| options(i, k)).collect();
        for (&(i, _), (generated, _)) in seqs
            .iter()
            .zip(generate_batch(&model, &prompts, &opts, &device)?)
        {
            let text = tokenizer.decode(&generated, true)?;
            responses[i].push(match jobs[i].2 {
                true => json!([{"role": "assistant", "content": text}]),
                false => json!(text),
            });
            bar.inc(1);
        }
    }
    let mut out = String::new();
    for ((prompt, _, _), responses) in jobs.iter().zip(responses) {
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
