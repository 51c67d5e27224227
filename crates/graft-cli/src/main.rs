//! `graft`: one binary for the whole adaptation pipeline. Each subcommand lives in its own file under
//! `commands/`. Any error prints one line (`error: <file>:<line>: <what>`) and exits with code 2.

use clap::{Parser, Subcommand};

mod commands;
mod io;

#[derive(Parser)]
#[command(
    name = "graft",
    version,
    about = "Adapt a base language model to a new language or domain",
    long_about = None,
    after_help = "Examples (one per command; `graft <command> --help` for more):\n  \
graft quickstart\n  \
graft train recipes/smollm2-qlora-sft.toml\n  \
graft generate --model SmolLM2-135M-Instruct.Q8_0.gguf --chat \"What is the capital of France?\"\n  \
graft score --model SmolLM2-135M-Instruct.Q8_0.gguf --input rows.jsonl --output scored.jsonl\n  \
graft classify --model runs/t5/final --input eval.jsonl --labels \"yes,no\" --output preds.jsonl\n  \
graft eval --model SmolLM2-135M-Instruct.Q8_0.gguf --tasks austen_bpb --output eval/\n  \
graft merge slerp.yml --out merged/\n  \
graft convert SmolLM2-135M-Instruct.Q8_0.gguf smollm2-hf\n  \
graft data dedup --input raw.jsonl --output clean.jsonl --report dropped.jsonl\n  \
graft init-model --config recipes/t5-tiny.config.json --text data/pretrain/austen.txt --output runs/t5/init\n  \
graft bench train"
)]
struct Cli {
    /// Replace outputs that already exist (by default an existing output is an error).
    #[arg(long, global = true)]
    force: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Score(commands::score::Args),
    Convert(commands::convert::Args),
    Generate(commands::generate::Args),
    Classify(commands::classify::Args),
    Train(commands::train::Args),
    Quickstart(commands::quickstart::Args),
    InitModel(commands::init_model::Args),
    Data(commands::data::Args),
    Bench(commands::bench::Args),
    Eval(commands::eval::Args),
    EvalCheck(commands::eval_check::Args),
    Merge(commands::merge::Args),
    Tokenize(commands::tokenize::Args),
    Vocab(commands::vocab::Args),
}

/// A bug must never print a Rust backtrace at a user: one line, exit code 70 (EX_SOFTWARE).
fn report_panics() {
    std::panic::set_hook(Box::new(|info| {
        if graft_models::guard::catching() {
            return; // a dependency's panic on bad input, turned into an error by its caller
        }
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let what = what.replace('\n', " ");
        eprintln!("internal error: {what}{at}; please report it with the command that caused it");
        std::process::exit(70);
    }));
    // Debug builds only: lets the test suite check the hook.
    if cfg!(debug_assertions) && std::env::var_os("GRAFT_TEST_PANIC").is_some() {
        panic!("test panic\nsecond line");
    }
}

fn main() {
    report_panics();
    // candle asks for its thread count on every matmul, and without RAYON_NUM_THREADS that reads
    // /proc/cpuinfo each time (a few % of decoding): answer once, before any thread starts.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let cli = Cli::parse();
    io::set_force(cli.force);
    let result = match cli.command {
        Command::Score(a) => commands::score::run(a),
        Command::Convert(a) => commands::convert::run(a),
        Command::Generate(a) => commands::generate::run(a),
        Command::Classify(a) => commands::classify::run(a),
        Command::Train(a) => commands::train::run(a),
        Command::Quickstart(a) => commands::quickstart::run(a),
        Command::InitModel(a) => commands::init_model::run(a),
        Command::Data(a) => commands::data::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::EvalCheck(a) => commands::eval_check::run(a),
        Command::Merge(a) => commands::merge::run(a),
        Command::Tokenize(a) => commands::tokenize::run(a),
        Command::Vocab(a) => commands::vocab::run(a),
    };
    if let Err(e) = result {
        // One line: the chain joined, newlines flattened.
        let msg = format!("{e:#}").replace('\n', " ");
        eprintln!("error: {msg}");
        std::process::exit(2);
    }
}
