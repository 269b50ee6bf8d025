//! Writes the embedded synthetic dataset (MVTec layout, with masks) to a folder, for the CLI and
//! `scripts/benchmark.sh`.
//!
//! ```text
//! cargo run --example synthetic_set -- out/synthetic 128 part
//! ```
//! prints `wrote out/synthetic/synthetic_part (64 train, 20 good + 20 defect test images, 128²)`.
//! Arguments: output folder, image side (default 128), kind `part` (default) or `weave`.
use cutpaste::data::synthetic::{SyntheticKind, SyntheticSpec};
use cutpaste::prelude::*;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = args.first().map_or("out/synthetic", String::as_str);
    let side: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(128);
    let kind = match args.get(2).map(String::as_str) {
        None | Some("part") => SyntheticKind::Part,
        Some("weave") => SyntheticKind::Weave,
        Some(other) => {
            eprintln!("unknown kind {other}: use part or weave");
            std::process::exit(2);
        }
    };
    let dir = SyntheticSpec::new(kind).side(side).seed(0).write(root)?;
    let ds = Dataset::mvtec(&dir)?;
    let bad = ds.test.iter().filter(|s| s.is_anomalous()).count();
    println!(
        "wrote {} ({} train, {} good + {bad} defect test images, {side}²)",
        dir.display(),
        ds.train.len(),
        ds.test.len() - bad
    );
    Ok(())
}
