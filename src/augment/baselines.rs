//! The paper's baselines (Table 1): Cutout, Scar-cutout and Rotation prediction.
use image::{GrayImage, Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::cutpaste::{rect_mask, CutPasteParams};
use super::geometry::{sample_patch_size, Rect};
use super::scar::{fill_scar, ScarGeometry, ScarParams};
use crate::{Error, Result};

/// How a Cutout rectangle is filled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CutoutFill {
    /// Mid grey `(128, 128, 128)`: the paper's Table 1 Cutout baseline.
    #[default]
    Gray,
    /// The image's mean colour (per channel, rounded).
    Mean,
    /// A uniformly random colour per view.
    Random,
}

/// The result of a Cutout or Scar-cutout.
#[derive(Clone, Debug, PartialEq)]
pub struct CutoutOutcome {
    /// The augmented image (same size as the input).
    pub image: RgbImage,
    /// 255 where the fill was drawn (the only pixels that may differ), 0 elsewhere.
    pub footprint: GrayImage,
    /// The filled rectangle (Cutout) or the rotated scar's bounding box (Scar-cutout).
    pub region: Rect,
    /// The fill colour.
    pub colour: [u8; 3],
}

/// Cutout: fills a rectangle drawn exactly like a CutPaste patch (area and aspect ratio of
/// `geometry`; its jitter is unused) with `fill`.
///
/// Errors: [`Error::InvalidParam`] for bad parameters, [`Error::ImageTooSmall`] when the image
/// cannot hold the smallest rectangle.
pub fn cutout(
    image: &RgbImage,
    geometry: &CutPasteParams,
    fill: CutoutFill,
    seed: u64,
) -> Result<CutoutOutcome> {
    geometry.check()?;
    geometry.check_image(image.width(), image.height())?;
    Ok(cutout_with(
        image,
        geometry,
        fill,
        &mut ChaCha8Rng::seed_from_u64(seed),
    ))
}

/// Cutout on checked parameters and image size.
pub(crate) fn cutout_with(
    image: &RgbImage,
    geometry: &CutPasteParams,
    fill: CutoutFill,
    rng: &mut ChaCha8Rng,
) -> CutoutOutcome {
    let (w, h) = image.dimensions();
    let size = sample_patch_size(w, h, geometry.area_ratio, geometry.aspect_ratio, rng);
    let region = Rect::random_inside(size.width, size.height, w, h, rng);
    let colour = match fill {
        CutoutFill::Gray => [128, 128, 128],
        CutoutFill::Mean => mean_colour(image),
        CutoutFill::Random => rng.random(),
    };
    let mut out = image.clone();
    for y in region.y..region.y + region.height {
        for x in region.x..region.x + region.width {
            out.put_pixel(x, y, Rgb(colour));
        }
    }
    CutoutOutcome {
        image: out,
        footprint: rect_mask(w, h, region),
        region,
        colour,
    }
}

/// Scar-cutout: a thin rotated rectangle drawn exactly like a scar (`geometry`; its jitter is
/// unused) filled with a uniformly random colour.
///
/// Errors: [`Error::InvalidParam`] for bad parameters, [`Error::ImageTooSmall`] for images below
/// [`ScarParams::min_image_size`].
pub fn scar_cutout(image: &RgbImage, geometry: &ScarParams, seed: u64) -> Result<CutoutOutcome> {
    geometry.check()?;
    geometry.check_image(image.width(), image.height())?;
    Ok(scar_cutout_with(
        image,
        geometry,
        &mut ChaCha8Rng::seed_from_u64(seed),
    ))
}

/// Scar-cutout on checked parameters and image size.
pub(crate) fn scar_cutout_with(
    image: &RgbImage,
    geometry: &ScarParams,
    rng: &mut ChaCha8Rng,
) -> CutoutOutcome {
    let geo = ScarGeometry::sample(geometry, image.width(), image.height(), rng);
    let colour: [u8; 3] = rng.random();
    let mut out = image.clone();
    let footprint = fill_scar(&mut out, &geo, Rgb(colour));
    CutoutOutcome {
        image: out,
        footprint,
        region: geo.destination,
        colour,
    }
}

/// Per-channel mean colour, rounded (black for an empty image).
pub fn mean_colour(image: &RgbImage) -> [u8; 3] {
    let n = u64::from(image.width()) * u64::from(image.height());
    if n == 0 {
        return [0; 3];
    }
    let mut sums = [0u64; 3];
    for px in image.as_raw().chunks_exact(3) {
        for (s, v) in sums.iter_mut().zip(px) {
            *s += u64::from(*v);
        }
    }
    sums.map(|s| ((s + n / 2) / n) as u8)
}

/// Rotation-prediction view: `image` rotated counter-clockwise by `quarter_turns · 90°`
/// (taken modulo 4). Needs a square image so that all four views have the input's size.
///
/// Errors: [`Error::InvalidInput`] for a non-square image.
pub fn rotate_quarters(image: &RgbImage, quarter_turns: usize) -> Result<RgbImage> {
    let (w, h) = image.dimensions();
    if w != h {
        return Err(Error::invalid_input(
            "image",
            format!("rotation prediction needs square images so all four views share one size, got {w}x{h}; resize or crop first"),
        ));
    }
    Ok(match quarter_turns % 4 {
        0 => image.clone(),
        1 => image::imageops::rotate270(image),
        2 => image::imageops::rotate180(image),
        _ => image::imageops::rotate90(image),
    })
}
