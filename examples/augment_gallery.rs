//! One PNG grid of the augmentations of an image: original | CutPaste | Scar | Cutout | rotation.
//! The top row shows the views, the bottom row the footprint (red) of the changed pixels over the
//! dimmed original (the rotation has no footprint). The input is resized to 256×256 first; no
//! pre-augmentation, so only the synthetic defect differs from the original.
//!
//! ```text
//! cargo run --release --example augment_gallery -- ../shared/data/mvtec/bottle/train/good/000.png out/gallery.png 7
//! # arguments: input image, output PNG (default out/augment_gallery.png), seed (default 0;
//! # CutPaste and Scar use it, Cutout uses seed + 1)
//! ```
//! Prints one JSON line with what was drawn, e.g.:
//! ```text
//! {"cutout":{"colour":[128,128,128],"region":[147,186,59,33]},"cutpaste":{"area_ratio":0.0405,"destination":[8,130,35,77],"source":[59,126,35,77]},"input":"../shared/data/mvtec/bottle/train/good/000.png","output":"out/gallery.png","scar":{"angle_deg":-29.9,"destination":[66,171,10,13],"length":12,"width":4},"seed":7}
//! ```
use cutpaste::augment::{
    cutout, cutpaste, rotate_quarters, scar, CutPasteParams, CutoutFill, Rect, ScarParams,
};
use image::{imageops, GrayImage, Rgb, RgbImage};

const SIDE: u32 = 256;
const GAP: u32 = 4;

fn rect(r: Rect) -> [u32; 4] {
    [r.x, r.y, r.width, r.height]
}

/// The original dimmed to 40 % with the footprint in red.
fn overlay(original: &RgbImage, footprint: Option<&GrayImage>) -> RgbImage {
    RgbImage::from_fn(SIDE, SIDE, |x, y| {
        if footprint.is_some_and(|f| f.get_pixel(x, y).0[0] == 255) {
            Rgb([230, 30, 30])
        } else {
            Rgb(original
                .get_pixel(x, y)
                .0
                .map(|v| (u16::from(v) * 2 / 5) as u8))
        }
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let Some(input) = args.get(1) else {
        return Err("usage: augment_gallery <input image> [output.png] [seed]".into());
    };
    let output = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "out/augment_gallery.png".into());
    let seed: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(0);

    let original = imageops::resize(
        &image::open(input)?.to_rgb8(),
        SIDE,
        SIDE,
        imageops::FilterType::Triangle,
    );
    let cp = cutpaste(&original, &CutPasteParams::paper(), seed)?;
    let sc = scar(&original, &ScarParams::paper(), seed)?;
    let co = cutout(
        &original,
        &CutPasteParams::paper(),
        CutoutFill::Gray,
        seed.wrapping_add(1),
    )?;
    let rot = rotate_quarters(&original, 1)?;

    let top = [&original, &cp.image, &sc.image, &co.image, &rot];
    let bottom = [
        overlay(&original, None),
        overlay(&original, Some(&cp.footprint)),
        overlay(&original, Some(&sc.footprint)),
        overlay(&original, Some(&co.footprint)),
        RgbImage::from_pixel(SIDE, SIDE, Rgb([40, 40, 40])),
    ];
    let cols = top.len() as u32;
    let mut grid = RgbImage::from_pixel(
        cols * SIDE + (cols + 1) * GAP,
        2 * SIDE + 3 * GAP,
        Rgb([255; 3]),
    );
    for (i, (t, b)) in top.iter().zip(&bottom).enumerate() {
        let x = i64::from(GAP + i as u32 * (SIDE + GAP));
        imageops::replace(&mut grid, *t, x, i64::from(GAP));
        imageops::replace(&mut grid, b, x, i64::from(2 * GAP + SIDE));
    }
    if let Some(dir) = std::path::Path::new(&output)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)?;
    }
    grid.save(&output)?;

    let json = serde_json::json!({
        "input": input,
        "output": output,
        "seed": seed,
        "cutpaste": {"source": rect(cp.source), "destination": rect(cp.destination),
                     "area_ratio": (cp.area_ratio * 1e4).round() / 1e4},
        "scar": {"width": sc.width, "length": sc.length,
                 "angle_deg": (sc.angle_deg * 10.0).round() / 10.0, "destination": rect(sc.destination)},
        "cutout": {"region": rect(co.region), "colour": co.colour},
    });
    println!("{json}");
    Ok(())
}
