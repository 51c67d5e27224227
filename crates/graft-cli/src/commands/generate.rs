//! `graft generate`: continue a prompt, or answer a chat message through the model's chat template.

use std::io::Write;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use graft_data::{ChatTemplate, Message};
use graft_models::{ModelSource, T5};
use graft_serve::{beam_search, generate, BeamOptions, GenerateOptions};
use serde_json::json;

use crate::io::ModelArgs;
use graft_models::Model;

#[derive(clap::Args, Debug)]
#[command(
    about = "Generate text from a prompt or a chat message (KV-cached, streamed)",
    after_help = "Examples:\n  graft generate --model SmolLM2-135M-Instruct.Q8_0.gguf --chat \"What is the capital of France?\"\n  \
graft generate --model ./my-model --prompt \"Once upon a time\" --temperature 0.8 --top-p 0.95 --seed 1\n  \
graft generate --model ./flan-t5-small --prompt \"translate English to German: How old are you?\" --num-beams 4\n  \
graft generate --model ./sft --input prompts.jsonl --samples 64 --temperature 0.7 --output candidates.jsonl"
)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Raw text to continue (BOS added as the tokenizer adds it).
    #[arg(long, conflicts_with = "chat", required_unless_present_any = ["chat", "input"])]
    pub prompt: Option<String>,
    /// Instead of one prompt: a JSONL/Parquet file of `{"prompt"}` rows (string or messages);
    /// writes `{"prompt", "responses"}` rows to --output (e.g. RSO's candidates).
    #[arg(long, conflicts_with_all = ["prompt", "chat"], requires = "output")]
    pub input: Option<std::path::PathBuf>,
    /// Responses sampled per prompt of --input (needs --temperature > 0 when > 1).
    #[arg(long, default_value_t = 1, requires = "input")]
    pub samples: usize,
    #[arg(long, requires = "input")]
    pub output: Option<std::path::PathBuf>,
    /// A user message, rendered with the model's chat template and a generation prompt.
    #[arg(long)]
    pub chat: Option<String>,
    /// A system message to put before the --chat message.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// 0 means greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Beam search with this many beams (encoder-decoder models).
    #[arg(long, default_value_t = 1)]
    pub num_beams: usize,
    /// Beam scores are summed log-probs / length^length_penalty (as transformers).
    #[arg(long, default_value_t = 1.0)]
    pub length_penalty: f64,
    /// Stop beam search once num_beams hypotheses are finished.
    #[arg(long)]
    pub early_stopping: bool,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    pub json: bool,
}

/// An encoder-decoder model: `--prompt` is the encoder input (EOS appended by the tokenizer).
fn run_seq2seq(args: &Args, source: &ModelSource, model: &Model, t5: &T5) -> Result<()> {
    let Some(prompt) = &args.prompt else {
        bail!("--chat: encoder-decoder models have no chat template; use --prompt");
    };
    let tokenizer = source.tokenizer()?;
    let input = tokenizer.encode(prompt, true)?;
    let eos = t5.cfg.eos_ids();
    let start = std::time::Instant::now();
    let (ids, reason) = if args.num_beams > 1 {
        if args.temperature > 0.0 {
            bail!("--num-beams: beam search is deterministic; drop --temperature");
        }
        let opts = BeamOptions {
            num_beams: args.num_beams,
            length_penalty: args.length_penalty,
            early_stopping: args.early_stopping,
            max_new_tokens: args.max_new_tokens,
            eos_token_ids: eos.clone(),
        };
        let (ids, _) = beam_search(t5, &input, &opts, &Device::Cpu)?;
        let reason = if ids.last().is_some_and(|t| eos.contains(t)) {
            "eos"
        } else {
            "length"
        };
        (ids, reason)
    } else {
        let opts = GenerateOptions {
            max_new_tokens: args.max_new_tokens,
            temperature: args.temperature,
            top_p: args.top_p,
            seed: args.seed,
            eos_token_ids: eos,
        };
        let (ids, reason) = generate(model, &input, &opts, &Device::Cpu, |_| true)?;
        (ids, reason.as_str())
    };
    let seconds = start.elapsed().as_secs_f64();
    let completion = tokenizer.decode(&ids, true)?;
    if args.json {
        let out = json!({
            "prompt": prompt, "prompt_ids": input, "completion": completion, "completion_ids": ids,
            "stop_reason": reason, "tokens_per_second": ids.len() as f64 / seconds,
        });
        println!("{out}");
    } else {
        println!("{completion}");
    }
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    if !(0.0..=1.0).contains(&args.top_p) || args.top_p == 0.0 {
        bail!("--top-p: must be in (0, 1], got {}", args.top_p);
    }
    if args.temperature < 0.0 {
        bail!("--temperature: must be ≥ 0, got {}", args.temperature);
    }
    if let Some(input) = &args.input {
        return super::generate_batch::run(&args, input);
    }
    let (source, model, device) = args.model.load_any()?;
    if let Model::Seq2Seq(t5) = &model {
        return run_seq2seq(&args, &source, &model, t5);
    }
    if args.num_beams > 1 {
        bail!("--num-beams: beam search is implemented for encoder-decoder models only");
    }
    let tokenizer = source.tokenizer()?;
    let (prompt, prompt_ids) = match (&args.prompt, &args.chat) {
        (Some(p), _) => (p.clone(), tokenizer.encode(p, true)?),
        (None, Some(c)) => {
            let template = tokenizer.chat_template.as_deref().with_context(|| {
                format!(
                    "{}: the model has no chat template; use --prompt",
                    args.model.model.display()
                )
            })?;
            let mut messages = Vec::new();
            if let Some(s) = &args.system {
                messages.push(Message::new("system", s));
            }
            messages.push(Message::new("user", c));
            let text = ChatTemplate::new(template)?.render(
                &messages,
                true,
                tokenizer.bos_token.as_deref(),
                tokenizer.eos_token.as_deref(),
            )?;
            // The template already holds any BOS, as transformers' apply_chat_template assumes.
            let ids = tokenizer.encode(&text, false)?;
            (text, ids)
        }
        (None, None) => bail!("give --prompt or --chat"),
    };
    let opts = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        eos_token_ids: source.generation.eos_token_ids.clone(),
    };
    let start = std::time::Instant::now();
    let mut generated = Vec::new();
    let mut printed = 0;
    let mut stdout = std::io::stdout();
    let (ids, reason) = generate(&model, &prompt_ids, &opts, &device, |token| {
        generated.push(token);
        if !args.json {
            // Print what decodes cleanly so far; a partial UTF-8 sequence waits for its next byte.
            if let Ok(text) = tokenizer.decode(&generated, true) {
                if !text.ends_with('\u{FFFD}') && text.len() > printed {
                    let _ = write!(stdout, "{}", &text[printed..]);
                    let _ = stdout.flush();
                    printed = text.len();
                }
            }
        }
        true
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let completion = tokenizer.decode(&ids, true)?;
    if args.json {
        let out = json!({
            "prompt": prompt,
            "prompt_ids": prompt_ids,
            "completion": completion,
            "completion_ids": ids,
            "stop_reason": reason.as_str(),
            "tokens_per_second": ids.len() as f64 / seconds,
        });
        println!("{out}");
    } else {
        if completion.len() > printed {
            print!("{}", &completion[printed.min(completion.len())..]);
        }
        println!();
    }
    Ok(())
}
