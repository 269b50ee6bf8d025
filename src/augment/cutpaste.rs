//! CutPaste (paper §3.1 and Appendix A.2): cut a rectangle, colour-jitter it and paste it back at
//! a random location of the same image.
use image::{GrayImage, RgbImage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::geometry::{check_patch_fits, sample_patch_size, Rect};
use super::jitter::{jitter_in_place, ColorJitter, JitterFactors};
use crate::{Error, Result};

/// Parameters of a CutPaste patch. [`paper`](Self::paper) gives Appendix A.2's values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CutPasteParams {
    /// Patch area as a fraction of the image area, drawn from `U(lo, hi)`; paper `(0.02, 0.15)`.
    pub area_ratio: (f64, f64),
    /// Patch width/height ratio, drawn log-uniformly from `[lo, hi]`; paper `(0.3, 1/0.3)`.
    pub aspect_ratio: (f64, f64),
    /// Colour jitter applied to the cut patch before pasting; paper `ColorJitter(0.1, 0.1, 0.1, 0.1)`.
    pub jitter: ColorJitter,
}

impl Default for CutPasteParams {
    fn default() -> Self {
        Self::paper()
    }
}

impl CutPasteParams {
    /// Appendix A.2: area ratio `U(0.02, 0.15)`, aspect ratio log-uniform in `[0.3, 1/0.3]`,
    /// patch jitter 0.1 on all four components.
    pub fn paper() -> Self {
        Self {
            area_ratio: (0.02, 0.15),
            aspect_ratio: (0.3, 1.0 / 0.3),
            jitter: ColorJitter::paper(),
        }
    }

    /// Validates the ranges: `0 < area lo ≤ hi < 1`, `0 < aspect lo ≤ hi`, valid jitter.
    pub fn check(&self) -> Result<()> {
        let (lo, hi) = self.area_ratio;
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi && hi < 1.0) {
            return Err(Error::invalid_param(
                "area_ratio",
                format!("needs 0 < lo <= hi < 1 (fractions of the image area), got ({lo}, {hi})"),
            ));
        }
        let (lo, hi) = self.aspect_ratio;
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi) {
            return Err(Error::invalid_param(
                "aspect_ratio",
                format!("needs 0 < lo <= hi (width / height), got ({lo}, {hi})"),
            ));
        }
        self.jitter.check("patch_jitter")
    }

    /// Errors with [`Error::ImageTooSmall`] when the smallest possible patch would be narrower
    /// than one pixel on a `width × height` image.
    pub fn check_image(&self, width: u32, height: u32) -> Result<()> {
        check_patch_fits(
            width,
            height,
            self.area_ratio,
            self.aspect_ratio,
            "CutPaste patch",
        )
    }
}

/// The result of one CutPaste: the new image, the footprint and everything that was drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct CutPasteOutcome {
    /// The augmented image (same size as the input).
    pub image: RgbImage,
    /// 255 on the destination rectangle (the only pixels that may differ), 0 elsewhere.
    pub footprint: GrayImage,
    /// Where the patch was cut.
    pub source: Rect,
    /// Where the patch was pasted (same size as `source`).
    pub destination: Rect,
    /// The drawn area ratio (before rounding the sides to pixels).
    pub area_ratio: f64,
    /// The drawn aspect ratio width/height (before rounding).
    pub aspect_ratio: f64,
    /// The jitter applied to the patch.
    pub jitter: JitterFactors,
}

/// CutPaste with a seed: see [`CutPasteParams`] for the distribution. Both rectangles lie fully
/// inside the image; their positions are independent and uniform (they may overlap, and may
/// coincide, in which case only the jitter changes the patch).
///
/// Errors: [`Error::InvalidParam`] for bad parameters, [`Error::ImageTooSmall`] when the image
/// cannot hold the smallest patch.
pub fn cutpaste(image: &RgbImage, params: &CutPasteParams, seed: u64) -> Result<CutPasteOutcome> {
    params.check()?;
    params.check_image(image.width(), image.height())?;
    Ok(cutpaste_with(
        image,
        params,
        &mut ChaCha8Rng::seed_from_u64(seed),
    ))
}

/// CutPaste on checked parameters and image size.
pub(crate) fn cutpaste_with(
    image: &RgbImage,
    params: &CutPasteParams,
    rng: &mut ChaCha8Rng,
) -> CutPasteOutcome {
    let (width, height) = image.dimensions();
    let size = sample_patch_size(width, height, params.area_ratio, params.aspect_ratio, rng);
    let source = Rect::random_inside(size.width, size.height, width, height, rng);
    let destination = Rect::random_inside(size.width, size.height, width, height, rng);
    let mut patch = crop(image, source);
    let jitter = jitter_in_place(&mut patch, &params.jitter, rng);
    let mut out = image.clone();
    paste(&mut out, &patch, destination.x, destination.y);
    CutPasteOutcome {
        image: out,
        footprint: rect_mask(width, height, destination),
        source,
        destination,
        area_ratio: size.area_ratio,
        aspect_ratio: size.aspect_ratio,
        jitter,
    }
}

/// Copies a rectangle (which must fit) out of an image, row by row.
pub(crate) fn crop(image: &RgbImage, r: Rect) -> RgbImage {
    let stride = image.width() as usize * 3;
    let row_len = r.width as usize * 3;
    let mut buf = Vec::with_capacity(row_len * r.height as usize);
    let raw = image.as_raw();
    for y in r.y..r.y + r.height {
        let start = y as usize * stride + r.x as usize * 3;
        buf.extend_from_slice(&raw[start..start + row_len]);
    }
    RgbImage::from_raw(r.width, r.height, buf).unwrap_or_default()
}

/// Copies `patch` into `image` at `(x, y)`; the patch must fit.
pub(crate) fn paste(image: &mut RgbImage, patch: &RgbImage, x: u32, y: u32) {
    let stride = image.width() as usize * 3;
    let row_len = patch.width() as usize * 3;
    let raw: &mut [u8] = image;
    for (j, row) in patch.as_raw().chunks_exact(row_len.max(1)).enumerate() {
        let start = (y as usize + j) * stride + x as usize * 3;
        raw[start..start + row_len].copy_from_slice(row);
    }
}

/// A mask that is 255 on `r` and 0 elsewhere.
pub(crate) fn rect_mask(width: u32, height: u32, r: Rect) -> GrayImage {
    let mut mask = GrayImage::new(width, height);
    let stride = width as usize;
    let raw: &mut [u8] = &mut mask;
    for y in r.y..r.y + r.height {
        let start = y as usize * stride + r.x as usize;
        raw[start..start + r.width as usize].fill(255);
    }
    mask
}
