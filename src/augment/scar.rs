//! CutPaste-Scar (paper §3.1 and Appendix A.2): a thin rectangle, cut from the image, colour
//! jittered, rotated and pasted with its rotated (non-rectangular) footprint.
use image::{GrayImage, Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::cutpaste::crop;
use super::geometry::{max_rotated_extent, uniform, Rect, RotatedRaster};
use super::jitter::{jitter_in_place, ColorJitter, JitterFactors};
use crate::{Error, Result};

/// Parameters of a scar. [`paper`](Self::paper) gives Appendix A.2's values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScarParams {
    /// Width in pixels, uniform over the integers `lo..=hi`; paper `[2, 16]`.
    /// [our choice] integers drawn uniformly (the paper gives only the range).
    pub width: (u32, u32),
    /// Length in pixels, uniform over the integers `lo..=hi`; paper `[10, 25]`.
    pub length: (u32, u32),
    /// Rotation in degrees (counter-clockwise on screen), `U(lo, hi)`; paper `(−45, 45)`.
    pub rotation_deg: (f64, f64),
    /// Colour jitter applied to the cut scar before rotating; paper `ColorJitter(0.1, 0.1, 0.1, 0.1)`.
    pub jitter: ColorJitter,
}

impl Default for ScarParams {
    fn default() -> Self {
        Self::paper()
    }
}

impl ScarParams {
    /// Appendix A.2: width `U[2, 16]`, length `U[10, 25]`, rotation `U(−45°, 45°)`, jitter 0.1.
    pub fn paper() -> Self {
        Self {
            width: (2, 16),
            length: (10, 25),
            rotation_deg: (-45.0, 45.0),
            jitter: ColorJitter::paper(),
        }
    }

    /// Validates the ranges: `2 ≤ lo ≤ hi` for width and length (so every rotated scar covers at
    /// least one pixel), `−180 ≤ lo ≤ hi ≤ 180` degrees, valid jitter.
    pub fn check(&self) -> Result<()> {
        for (name, (lo, hi)) in [("scar_width", self.width), ("scar_length", self.length)] {
            if lo < 2 || lo > hi {
                return Err(Error::invalid_param(
                    name,
                    format!("needs 2 <= lo <= hi pixels, got ({lo}, {hi})"),
                ));
            }
        }
        let (lo, hi) = self.rotation_deg;
        if !(lo.is_finite() && hi.is_finite() && -180.0 <= lo && lo <= hi && hi <= 180.0) {
            return Err(Error::invalid_param(
                "scar_rotation",
                format!("needs -180 <= lo <= hi <= 180 degrees, got ({lo}, {hi})"),
            ));
        }
        self.jitter.check("patch_jitter")
    }

    /// The smallest image (width, height) that holds the largest scar at every allowed angle and
    /// from which the largest unrotated scar can be cut.
    pub fn min_image_size(&self) -> (u32, u32) {
        let (w, l) = (f64::from(self.width.1), f64::from(self.length.1));
        let (bw, bh) = max_rotated_extent(w, l, self.rotation_deg);
        let bw = ((bw - 1e-9).ceil() as u32).max(self.width.1);
        let bh = ((bh - 1e-9).ceil() as u32).max(self.length.1);
        (bw, bh)
    }

    /// Errors with [`Error::ImageTooSmall`] when a `width × height` image is smaller than
    /// [`min_image_size`](Self::min_image_size). The check is on the largest scar, so whether an
    /// image is accepted never depends on the seed.
    pub fn check_image(&self, width: u32, height: u32) -> Result<()> {
        let (mw, mh) = self.min_image_size();
        if width < mw || height < mh {
            return Err(Error::ImageTooSmall {
                width,
                height,
                min: mw.max(mh),
                what: "scar (largest scar_width x scar_length at the widest scar_rotation)".into(),
            });
        }
        Ok(())
    }
}

/// A drawn scar shape and where it goes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ScarGeometry {
    pub width: u32,
    pub length: u32,
    pub angle_deg: f64,
    pub raster: RotatedRaster,
    pub destination: Rect,
}

impl ScarGeometry {
    /// Draws width, length, angle and the destination of the rotated bounding box.
    pub fn sample(params: &ScarParams, image_w: u32, image_h: u32, rng: &mut ChaCha8Rng) -> Self {
        let width = rng.random_range(params.width.0..=params.width.1);
        let length = rng.random_range(params.length.0..=params.length.1);
        let angle_deg = uniform(rng, params.rotation_deg);
        let raster = RotatedRaster::new(width, length, angle_deg);
        // `check_image` guarantees the box fits; `min` keeps the range valid regardless.
        let destination = Rect::random_inside(
            raster.width.min(image_w),
            raster.height.min(image_h),
            image_w,
            image_h,
            rng,
        );
        Self {
            width,
            length,
            angle_deg,
            raster,
            destination,
        }
    }

    /// Calls `f(x, y, u, v)` for every footprint pixel `(x, y)` of the image with its source
    /// pixel `(u, v)` in the unrotated scar.
    pub fn for_each(&self, mut f: impl FnMut(u32, u32, u32, u32)) {
        let d = self.destination;
        for j in 0..d.height {
            for i in 0..d.width {
                let idx = (j * self.raster.width + i) as usize;
                if let Some(Some((u, v))) = self.raster.source.get(idx) {
                    f(d.x + i, d.y + j, *u, *v);
                }
            }
        }
    }

    /// The footprint mask of a `width × height` image.
    pub fn mask(&self, width: u32, height: u32) -> GrayImage {
        let mut mask = GrayImage::new(width, height);
        self.for_each(|x, y, _, _| mask.put_pixel(x, y, image::Luma([255])));
        mask
    }
}

/// The result of one scar: the new image, the footprint and everything that was drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct ScarOutcome {
    /// The augmented image (same size as the input).
    pub image: RgbImage,
    /// 255 on the rotated scar (the only pixels that may differ), 0 elsewhere.
    pub footprint: GrayImage,
    /// Drawn width (pixels, before rotation).
    pub width: u32,
    /// Drawn length (pixels, before rotation).
    pub length: u32,
    /// Drawn rotation in degrees (counter-clockwise on screen).
    pub angle_deg: f64,
    /// Where the unrotated `width × length` scar was cut.
    pub source: Rect,
    /// Bounding box of the rotated scar where it was pasted.
    pub destination: Rect,
    /// The jitter applied to the scar.
    pub jitter: JitterFactors,
}

/// CutPaste-Scar with a seed: see [`ScarParams`] for the distribution. The scar is cut from a
/// uniform position, jittered, rotated with nearest-neighbour sampling (as PIL's default
/// `rotate`) and pasted only where the rotated rectangle covers a pixel.
///
/// Errors: [`Error::InvalidParam`] for bad parameters, [`Error::ImageTooSmall`] for images below
/// [`ScarParams::min_image_size`].
pub fn scar(image: &RgbImage, params: &ScarParams, seed: u64) -> Result<ScarOutcome> {
    params.check()?;
    params.check_image(image.width(), image.height())?;
    Ok(scar_with(
        image,
        params,
        &mut ChaCha8Rng::seed_from_u64(seed),
    ))
}

/// Scar on checked parameters and image size.
pub(crate) fn scar_with(
    image: &RgbImage,
    params: &ScarParams,
    rng: &mut ChaCha8Rng,
) -> ScarOutcome {
    let (w, h) = image.dimensions();
    let geo = ScarGeometry::sample(params, w, h, rng);
    let source = Rect::random_inside(geo.width.min(w), geo.length.min(h), w, h, rng);
    let mut patch = crop(image, source);
    let jitter = jitter_in_place(&mut patch, &params.jitter, rng);
    let mut out = image.clone();
    let mut footprint = GrayImage::new(w, h);
    geo.for_each(|x, y, u, v| {
        let u = u.min(patch.width() - 1);
        let v = v.min(patch.height() - 1);
        out.put_pixel(x, y, *patch.get_pixel(u, v));
        footprint.put_pixel(x, y, image::Luma([255]));
    });
    ScarOutcome {
        image: out,
        footprint,
        width: geo.width,
        length: geo.length,
        angle_deg: geo.angle_deg,
        source,
        destination: geo.destination,
        jitter,
    }
}

/// Fills the footprint of a drawn scar with one colour; returns the footprint.
pub(crate) fn fill_scar(image: &mut RgbImage, geo: &ScarGeometry, colour: Rgb<u8>) -> GrayImage {
    let (w, h) = image.dimensions();
    geo.for_each(|x, y, _, _| image.put_pixel(x, y, colour));
    geo.mask(w, h)
}
