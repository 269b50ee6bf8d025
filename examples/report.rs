//! The HTML evaluation report on the embedded synthetic dataset: generate → train → threshold on
//! synthetic views → evaluate → t-SNE map → `index.html` with PNG charts and a gallery.
//!
//! ```text
//! cargo run --features html --example report
//! cargo run --features html --example report -- out/report 150 64 40
//! #   arguments: output folder (out/report), training steps (150), side (64),
//! #   images per embedding-map group (40)
//! ```
//! Prints one JSON line; measured with `-- out/report 30 64 40` on a busy 2-core CPU (30 steps:
//! a smoke run, not a result; the notes say what the report could not show):
//! ```text
//! {"category":"synthetic_part","embedding_points":160,"embedding_seconds":3.33,"html_seconds":0.085,"image_auroc":0.9125,"index":"out/report/html/index.html","notes":["pixel-level metrics: the detector has no localizer (no anomaly maps were computed)","no heatmaps: the detector has no localizer (the gallery shows image | mask)"],"threshold":110.48}
//! ```
use cutpaste::data::synthetic::{SyntheticKind, SyntheticSpec};
use cutpaste::embedding::embedding_map;
use cutpaste::prelude::*;
use std::time::Instant;

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() -> cutpaste::Result<()> {
    let out: String = arg(1, "out/report".to_string());
    let steps: usize = arg(2, 150);
    let side: u32 = arg(3, 64);
    let per_group: usize = arg(4, 40);
    let out = std::path::PathBuf::from(out);
    let root = SyntheticSpec::new(SyntheticKind::Part)
        .side(side)
        .seed(0)
        .write(out.join("data"))?;
    let ds = Dataset::mvtec(&root)?;
    let mut detector = Detector::params()
        .image_size(side)
        .batch_images(16)
        .training(TrainParams::paper().steps(steps))
        .device(Device::cuda_if_available())
        .seed(0)
        .fit(&ds)?;
    // a threshold without defect samples: F1-max on CutPaste/Scar views of training images
    let threshold = detector.threshold_from_synthetic(&ds.load_train(side)?, 1)?;
    let report = detector.evaluate(&ds)?;
    let map = embedding_map(&detector, &ds, 7, per_group)?;
    let t0 = Instant::now();
    let html = report.write_html_with(out.join("html"), Some(&map))?;
    let line = serde_json::json!({
        "category": report.category,
        "image_auroc": report.image_auroc,
        "threshold": threshold,
        "embedding_points": map.points.len(),
        "embedding_seconds": map.seconds,
        "html_seconds": t0.elapsed().as_secs_f64(),
        "index": html.index,
        "notes": html.notes,
    });
    println!("{line}");
    Ok(())
}
