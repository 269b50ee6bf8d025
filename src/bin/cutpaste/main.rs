//! `cutpaste`: train, evaluate and apply CutPaste anomaly detectors from the command line.
//!
//! ```text
//! cargo run --release --features cli --bin cutpaste -- --help
//! cutpaste train ../shared/data/mvtec/bottle -o bottle.safetensors --steps 300 --size 128
//! cutpaste eval bottle.safetensors ../shared/data/mvtec/bottle --out out/bottle --report out/bottle/html
//! cutpaste predict bottle.safetensors ../shared/data/mvtec/bottle/test/broken_large --csv scores.csv
//! ```
//! Exit codes: 0 success, 1 error (the message says what and how to fix it), 2 bad command line,
//! 3 `predict --fail-on-anomaly` found an anomalous image, 4 some `predict` inputs were unreadable.
use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod eval;
mod heatmaps;
mod options;
mod predict;
mod progress;
mod train;

mod malloc_conf;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// CutPaste (CVPR 2021) anomaly detection: learn from defect-free images only, then score new
/// images (higher = more anomalous).
#[derive(Parser)]
#[command(name = "cutpaste", version, about, long_about = None)]
#[command(
    after_help = "A session: `cutpaste train DATA -o model.safetensors --steps 300 --size 128`, \
then `cutpaste eval model.safetensors DATA`, then `cutpaste predict model.safetensors IMAGES...`.\n\
Run `cutpaste <command> --help` for each command's options."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a detector on defect-free images and save it to one .safetensors file.
    Train(train::TrainArgs),
    /// Evaluate a saved detector on an MVTec-layout test set (AUROC, F1-max, per defect type).
    Eval(eval::EvalArgs),
    /// Score images or folders of images with a saved detector; prints CSV.
    Predict(predict::PredictArgs),
}

/// What a command reports back to `main`: success or a non-error exit code.
pub(crate) enum Outcome {
    Ok,
    Code(u8),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Predict(a) => predict::run(a),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Code(c)) => ExitCode::from(c),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
