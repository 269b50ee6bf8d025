//! Trains and evaluates on any MVTec-layout category; writes `report.json`, `report.md` and the
//! last checkpoint `detector.safetensors`.
//!
//! ```text
//! cargo run --release --example mvtec -- ../shared/data/mvtec bottle --steps 300 --size 128 --out out/bottle
//! cargo run --release --example mvtec -- ../shared/data/elpv mono --image-level-only --steps 300
//! ```
//! Options: `--steps N` (300), `--size PX` (256), `--batch-images N` (32), `--seed S` (0),
//! `--variant three-way|cutpaste|scar|union` (three-way), `--density gaussian|kde` (gaussian),
//! `--image-level-only` (accept defect images without masks), `--out DIR` (`out/<category>`),
//! `--heatmaps DIR` (an overlay per test image: GradCAM, as this example fits no patch localizer),
//! `--report DIR` (the HTML report; build with `--features html`).
//! Prints progress every 25 steps and the report table, e.g. (bottle, `--steps 5 --size 64
//! --batch-images 8`, CPU; a smoke run, not a result):
//! ```text
//! step 5/5 loss 1.093 acc 0.50 60.2 img/s
//! | bottle | value |
//! |---|---|
//! | image AUROC | 96.1 |
//! | AUROC good vs broken_large | 99.5 |
//! ...
//! wrote report.json, report.md and detector.safetensors to out/bottle
//! ```
use cutpaste::data::MvtecOptions;
use cutpaste::prelude::*;
use std::path::PathBuf;

#[path = "../src/bin/cutpaste/malloc_conf.rs"]
mod malloc_conf;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

struct Args {
    category_dir: PathBuf,
    category: String,
    steps: usize,
    size: u32,
    batch_images: usize,
    seed: u64,
    variant: String,
    density: String,
    image_level_only: bool,
    out: PathBuf,
    heatmaps: Option<PathBuf>,
    report: Option<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let (pos, mut rest): (Vec<&String>, Vec<&String>) = (
        raw.iter().take_while(|a| !a.starts_with("--")).collect(),
        raw.iter().skip_while(|a| !a.starts_with("--")).collect(),
    );
    let [root, category] = pos.as_slice() else {
        return Err("usage: mvtec <root> <category> [--steps N] [--size PX] ...".into());
    };
    let mut a = Args {
        category_dir: PathBuf::from(root).join(category),
        category: category.to_string(),
        steps: 300,
        size: 256,
        batch_images: 32,
        seed: 0,
        variant: "three-way".into(),
        density: "gaussian".into(),
        image_level_only: false,
        out: PathBuf::from("out").join(category),
        heatmaps: None,
        report: None,
    };
    while let Some(flag) = rest.first().map(|s| s.as_str()) {
        if flag == "--image-level-only" {
            a.image_level_only = true;
            rest.remove(0);
            continue;
        }
        let value = rest
            .get(1)
            .ok_or(format!("{flag} needs a value"))?
            .to_string();
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag {
            "--steps" => a.steps = num(&value)? as usize,
            "--size" => a.size = num(&value)? as u32,
            "--batch-images" => a.batch_images = num(&value)? as usize,
            "--seed" => a.seed = num(&value)?,
            "--variant" => a.variant = value,
            "--density" => a.density = value,
            "--out" => a.out = value.into(),
            "--heatmaps" => a.heatmaps = Some(value.into()),
            "--report" => a.report = Some(value.into()),
            other => return Err(format!("unknown option {other}")),
        }
        rest.drain(..2);
    }
    Ok(a)
}

/// The HTML report with the embedding map (feature `html`).
#[cfg(feature = "html")]
fn write_html(
    detector: &Detector,
    ds: &Dataset,
    report: &Report,
    dir: &std::path::Path,
    seed: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let map = cutpaste::embedding::embedding_map(detector, ds, seed, 40)?;
    let html = report.write_html_with(dir, Some(&map))?;
    println!("wrote {}", html.index.display());
    Ok(())
}

#[cfg(not(feature = "html"))]
fn write_html(
    _: &Detector,
    _: &Dataset,
    _: &Report,
    _: &std::path::Path,
    _: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    Err("--report needs the `html` feature: cargo run --release --features html --example mvtec -- …".into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = parse()?;
    let augmentation = match a.variant.as_str() {
        "three-way" => Augmentation::three_way(),
        "cutpaste" => Augmentation::cutpaste(),
        "scar" => Augmentation::scar(),
        "union" => Augmentation::union(),
        v => return Err(format!("unknown --variant {v}").into()),
    };
    let density = match a.density.as_str() {
        "gaussian" => Density::gaussian(),
        "kde" => Density::kde(),
        d => return Err(format!("unknown --density {d}").into()),
    };
    let opts = MvtecOptions {
        allow_missing_masks: a.image_level_only,
    };
    let ds = Dataset::mvtec_with(&a.category_dir, opts)?;
    let steps = a.steps;
    let mut detector = Detector::params()
        .augmentation(augmentation)
        .density(density)
        .image_size(a.size)
        .batch_images(a.batch_images)
        .training(TrainParams::paper().steps(steps))
        .seed(a.seed)
        .fit_with(&ds, |e| {
            if let FitEvent::Train(p) = e {
                if p.step % 25 == 0 || p.step == steps {
                    eprintln!("{p}");
                }
            }
            Control::Continue
        })?;
    // A decision threshold without defect samples: F1-max on the training images vs their
    // CutPaste/Scar views (stored in the checkpoint; the report's AUROC does not depend on it).
    detector.threshold_from_synthetic(&ds.load_train(a.size)?, a.seed)?;
    let mut report = detector.evaluate(&ds)?;
    report.category = a.category.clone();
    if let Some(dir) = &a.heatmaps {
        let source = cutpaste::heatmap::write_test_overlays(&detector, &mut report, dir, |_| {})?;
        println!("wrote {source:?} overlays to {}", dir.display());
    }
    if let Some(dir) = &a.report {
        write_html(&detector, &ds, &report, dir, a.seed)?;
    }
    std::fs::create_dir_all(&a.out)?;
    std::fs::write(a.out.join("report.json"), report.to_json())?;
    std::fs::write(a.out.join("report.md"), report.to_markdown())?;
    detector.save(a.out.join("detector.safetensors"))?;
    print!("{}", report.to_markdown());
    println!(
        "wrote report.json, report.md and detector.safetensors to {}",
        a.out.display()
    );
    Ok(())
}
