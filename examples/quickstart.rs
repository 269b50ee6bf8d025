//! The README's main job on the embedded synthetic dataset: generate → train → score → AUROC.
//!
//! ```text
//! cargo run --example quickstart            # or: make demo
//! cargo run --example quickstart -- out/synthetic 300 96   # root, training steps (150), side (64)
//! ```
//! Prints the dataset, training progress every 25 steps and the evaluation; measured on a 2-core
//! CPU (fit 108 s):
//! ```text
//! synthetic_part: 64 train, 20 good + 20 defect test images -> out/synthetic/synthetic_part
//! step 25/150 loss 1.008 acc 0.40 72.2 img/s
//! ...
//! step 150/150 loss 0.725 acc 0.62 62.3 img/s
//! | synthetic_part | value |
//! |---|---|
//! | image AUROC | 92.0 |
//! | AUROC good vs contamination | 68.0 |
//! | AUROC good vs missing | 100.0 |
//! ...
//! ```
use cutpaste::data::synthetic::{SyntheticKind, SyntheticSpec};
use cutpaste::prelude::*;

#[path = "../src/bin/cutpaste/malloc_conf.rs"]
mod malloc_conf;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() -> cutpaste::Result<()> {
    let root: String = arg(1, "out/synthetic".to_string());
    let steps: usize = arg(2, 150);
    let side: u32 = arg(3, 64);
    let dir = SyntheticSpec::new(SyntheticKind::Part)
        .side(side)
        .seed(0)
        .write(&root)?;
    let ds = Dataset::mvtec(&dir)?;
    let n_bad = ds.test.iter().filter(|s| s.is_anomalous()).count();
    println!(
        "{}: {} train, {} good + {} defect test images -> {}",
        ds.name,
        ds.train.len(),
        ds.test.len() - n_bad,
        n_bad,
        dir.display()
    );
    let detector = Detector::params()
        .image_size(side)
        .batch_images(16)
        .training(TrainParams::paper().steps(steps))
        .device(Device::cuda_if_available())
        .seed(0)
        .fit_with(&ds, |event| {
            if let FitEvent::Train(p) = event {
                if p.step % 25 == 0 || p.step == steps {
                    println!("{p}");
                }
            }
            Control::Continue
        })?;
    let report = detector.evaluate(&ds)?;
    print!("{}", report.to_markdown());
    Ok(())
}
