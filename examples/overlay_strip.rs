//! One picture of what the localization numbers mean: rows of `image | overlay | ground-truth
//! mask` for a few defective test images (the first of each defect type, then the next ones)
//! and one good image, built from the overlays that `cutpaste eval --heatmaps DIR` wrote.
//!
//! ```text
//! cutpaste eval MODEL ../shared/data/bsdata/ball_screw --heatmaps out/heat/bsdata
//! cargo run --release --example overlay_strip -- ../shared/data/bsdata/ball_screw out/heat/bsdata \
//!     docs/img/bsdata.png 4
//! ```
//! prints one line, e.g. `wrote docs/img/bsdata.png: 5 rows (pitting/000, …, good/000), 600×760`.
//! Every panel is scaled to a height of 150 px (aspect kept); the overlay's colour scale is the one
//! `eval --heatmaps` chose (the whole test set's range, outline at the mean of the good images'
//! per-image maxima).
use cutpaste::data::{load_rgb, Dataset, MvtecOptions, Sample};
use cutpaste::prelude::*;
use image::{imageops, RgbImage};
use std::path::{Path, PathBuf};

const PANEL_HEIGHT: u32 = 150;
const GAP: u32 = 4;

/// The overlay `eval --heatmaps` wrote for test sample `i` (see `write_test_overlays`).
fn overlay_path(dir: &Path, i: usize, s: &Sample) -> PathBuf {
    let stem = s
        .path
        .file_stem()
        .map_or("image".into(), |n| n.to_string_lossy());
    dir.join(format!("{i:04}_{}_{stem}.png", s.defect_type))
}

/// Indices of up to `n` defective samples, one per defect type first, and the first good one.
fn pick(test: &[Sample], n: usize) -> Vec<usize> {
    let mut picked: Vec<usize> = Vec::new();
    let mut types: Vec<&str> = Vec::new();
    for (i, s) in test.iter().enumerate() {
        if s.is_anomalous() && !types.contains(&s.defect_type.as_str()) && picked.len() < n {
            types.push(&s.defect_type);
            picked.push(i);
        }
    }
    for (i, s) in test.iter().enumerate() {
        if s.is_anomalous() && picked.len() < n && !picked.contains(&i) {
            picked.push(i);
        }
    }
    picked.extend(test.iter().position(|s| !s.is_anomalous()));
    picked
}

fn scaled(img: &RgbImage) -> RgbImage {
    let w = (img.width() * PANEL_HEIGHT)
        .div_ceil(img.height().max(1))
        .max(1);
    imageops::resize(img, w, PANEL_HEIGHT, imageops::FilterType::Triangle)
}

/// `image | overlay | mask` for one sample (a black mask for good images).
fn row(dir: &Path, i: usize, s: &Sample) -> Result<RgbImage> {
    let image = load_rgb(&s.path)?;
    let overlay = load_rgb(overlay_path(dir, i, s))?;
    let mask = match &s.mask {
        Some(m) => {
            image::DynamicImage::ImageLuma8(cutpaste::data::image_io::load_mask(m)?).to_rgb8()
        }
        None => RgbImage::new(image.width(), image.height()),
    };
    let panels: Vec<RgbImage> = [image, overlay, mask].iter().map(scaled).collect();
    let width = panels.iter().map(|p| p.width() + GAP).sum::<u32>() - GAP;
    let mut out = RgbImage::from_pixel(width, PANEL_HEIGHT, image::Rgb([255, 255, 255]));
    let mut x = 0;
    for p in &panels {
        imageops::replace(&mut out, p, i64::from(x), 0);
        x += p.width() + GAP;
    }
    Ok(out)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: overlay_strip DATA OVERLAY_DIR OUT.png [DEFECTIVE_ROWS (4)]");
        std::process::exit(2);
    }
    let n = match args.get(3) {
        Some(v) => v
            .parse()
            .map_err(|_| Error::invalid_param("DEFECTIVE_ROWS", format!("{v}: not a number")))?,
        None => 4,
    };
    let data = Dataset::mvtec_with(
        &args[0],
        MvtecOptions {
            allow_missing_masks: true,
        },
    )?;
    let dir = Path::new(&args[1]);
    let picked = pick(&data.test, n);
    let rows: Vec<RgbImage> = picked
        .iter()
        .map(|&i| row(dir, i, &data.test[i]))
        .collect::<Result<_>>()?;
    let width = rows.iter().map(|r| r.width()).max().unwrap_or(1);
    let height = rows.len() as u32 * (PANEL_HEIGHT + GAP);
    let mut out = RgbImage::from_pixel(width, height.max(1), image::Rgb([255, 255, 255]));
    for (k, r) in rows.iter().enumerate() {
        imageops::replace(&mut out, r, 0, i64::from(k as u32 * (PANEL_HEIGHT + GAP)));
    }
    cutpaste::data::image_io::save_atomic(&out, &args[2])?;
    let names: Vec<String> = picked
        .iter()
        .map(|&i| {
            let s = &data.test[i];
            let stem = s.path.file_stem().unwrap_or_default().to_string_lossy();
            format!("{}/{stem}", s.defect_type)
        })
        .collect();
    println!(
        "wrote {}: {} rows ({}), {width}×{height}",
        args[2],
        rows.len(),
        names.join(", ")
    );
    Ok(())
}
