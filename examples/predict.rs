//! Applies a saved detector to an image or a folder of images: score, decision, CSV on stdout.
//!
//! ```text
//! cargo run --release --example mvtec -- ../shared/data/mvtec bottle --steps 150 --size 64 --out out/bottle
//! cargo run --release --example predict -- out/bottle/detector.safetensors ../shared/data/mvtec/bottle/test/broken_large
//! ```
//! Prints one CSV row per image, judged by the checkpoint's threshold (the `mvtec` example stores
//! the F1-max threshold of a synthetic validation set: training images vs their CutPaste/Scar
//! views), e.g.:
//! ```text
//! path,score,anomalous
//! ../shared/data/mvtec/bottle/test/broken_large/000.png,1187.2,true
//! ...
//! threshold 712.4: 20 of 20 images anomalous
//! ```
use cutpaste::prelude::*;
use std::path::PathBuf;

#[path = "../src/bin/cutpaste/malloc_conf.rs"]
mod malloc_conf;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [model, inputs @ ..] = args.as_slice() else {
        return Err("usage: predict <detector.safetensors> <image or folder>...".into());
    };
    if inputs.is_empty() {
        return Err("give at least one image or folder after the checkpoint".into());
    }
    let detector = Detector::load(model, Device::Cpu)?;
    // Scores above the threshold are anomalous; a checkpoint without one flags nothing.
    let threshold = detector.threshold().unwrap_or(f32::INFINITY);
    let paths = cutpaste::data::collect_images(inputs)?;
    let scores = detector.score_files(&paths, |_| {})?;
    println!("path,score,anomalous");
    let mut flagged = 0;
    for (p, s) in paths.iter().zip(scores) {
        match s {
            Ok(s) => {
                flagged += usize::from(s > threshold);
                println!("{},{s},{}", p.display(), s > threshold);
            }
            Err(e) => eprintln!("skipped: {e}"),
        }
    }
    eprintln!(
        "threshold {threshold:.1}: {flagged} of {} images anomalous",
        paths.len()
    );
    Ok(())
}
