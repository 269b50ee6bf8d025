//! Pre-augmentation applied to every training image before CutPaste (paper Appendix A.2:
//! "random translation and colour jitter", magnitudes not given).
//!
//! [our choice] `ColorJitter(0.1, 0.1, 0.1, 0.1)` on the whole image, then a random translation
//! by a whole number of pixels, up to ±12.5 % of each side, implemented as pad-and-crop with
//! reflection padding. All views of one source image share one pre-augmented base, so synthetic
//! views differ from the normal view only inside their footprint.
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::jitter::{jitter_in_place, ColorJitter, JitterFactors};
use crate::{Error, Result};

/// How the pixels uncovered by a translation are filled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PadMode {
    /// Mirror the image at its border without repeating the edge pixel (numpy `reflect`).
    /// [our choice] keeps the borders looking like the object's surroundings.
    #[default]
    Reflect,
    /// Repeat the edge pixel.
    Edge,
    /// A constant colour (torchvision's `RandomAffine` default is black).
    Constant([u8; 3]),
}

/// Colour jitter followed by a random translation. [`paper`](Self::paper) is the crate default.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreAugment {
    /// Jitter of the whole image (applied first).
    pub jitter: ColorJitter,
    /// Largest shift as a fraction of each side, in `[0, 0.5)`; the shift in pixels is uniform
    /// over the integers `−⌊t·side⌋..=⌊t·side⌋`.
    pub translate: f64,
    /// Filling of the uncovered border.
    pub pad: PadMode,
}

impl Default for PreAugment {
    fn default() -> Self {
        Self::paper()
    }
}

/// The result of a pre-augmentation.
#[derive(Clone, Debug, PartialEq)]
pub struct PreAugmentOutcome {
    /// The jittered, translated image (same size as the input).
    pub image: RgbImage,
    /// Horizontal shift in pixels: output `(x, y)` shows jittered input `(x − dx, y − dy)`.
    pub dx: i32,
    /// Vertical shift in pixels.
    pub dy: i32,
    /// The jitter that was applied.
    pub jitter: JitterFactors,
}

impl PreAugment {
    /// [our choice] `ColorJitter(0.1, 0.1, 0.1, 0.1)` then translation up to ±12.5 % with
    /// reflection padding.
    pub fn paper() -> Self {
        Self {
            jitter: ColorJitter::paper(),
            translate: 0.125,
            pad: PadMode::Reflect,
        }
    }

    /// Sets the jitter.
    pub fn jitter(mut self, jitter: ColorJitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the largest shift as a fraction of the side (0 turns translation off).
    pub fn translate(mut self, fraction: f64) -> Self {
        self.translate = fraction;
        self
    }

    /// Sets the padding of the uncovered border.
    pub fn pad(mut self, pad: PadMode) -> Self {
        self.pad = pad;
        self
    }

    /// Validates the jitter and `0 ≤ translate < 0.5`.
    pub fn check(&self) -> Result<()> {
        if !(self.translate.is_finite() && (0.0..0.5).contains(&self.translate)) {
            return Err(Error::invalid_param(
                "pre_augment.translate",
                format!(
                    "must lie in [0, 0.5) (fraction of the side), got {}",
                    self.translate
                ),
            ));
        }
        self.jitter.check("pre_augment.jitter")
    }

    /// Applies jitter then translation with a seed. Errors only on invalid parameters.
    pub fn apply(&self, image: &RgbImage, seed: u64) -> Result<PreAugmentOutcome> {
        self.check()?;
        Ok(self.apply_with(image, &mut ChaCha8Rng::seed_from_u64(seed)))
    }

    /// Pre-augmentation on checked parameters.
    pub(crate) fn apply_with(&self, image: &RgbImage, rng: &mut ChaCha8Rng) -> PreAugmentOutcome {
        let mut jittered = image.clone();
        let jitter = jitter_in_place(&mut jittered, &self.jitter, rng);
        let (w, h) = image.dimensions();
        let tx = (self.translate * f64::from(w)).floor() as i32;
        let ty = (self.translate * f64::from(h)).floor() as i32;
        let dx = rng.random_range(-tx..=tx);
        let dy = rng.random_range(-ty..=ty);
        let image = if dx == 0 && dy == 0 {
            jittered
        } else {
            translate(&jittered, dx, dy, self.pad)
        };
        PreAugmentOutcome {
            image,
            dx,
            dy,
            jitter,
        }
    }
}

/// Maps an out-of-range coordinate back into `0..n` (`None` for constant padding).
fn source_index(i: i64, n: i64, pad: PadMode) -> Option<usize> {
    if (0..n).contains(&i) {
        return Some(i as usize);
    }
    match pad {
        PadMode::Constant(_) => None,
        PadMode::Edge => Some(i.clamp(0, n - 1) as usize),
        PadMode::Reflect => {
            if n == 1 {
                return Some(0);
            }
            // Reflection about the edge pixels has period 2(n − 1).
            let period = 2 * (n - 1);
            let m = i.rem_euclid(period);
            Some((if m < n { m } else { period - m }) as usize)
        }
    }
}

/// Shifts `image` by `(dx, dy)` pixels: output `(x, y)` = input `(x − dx, y − dy)`, the border
/// filled according to `pad`. Works for any shift, including ones larger than the image.
pub fn translate(image: &RgbImage, dx: i32, dy: i32, pad: PadMode) -> RgbImage {
    let (w, h) = image.dimensions();
    let mut out = RgbImage::new(w, h);
    let (wi, hi) = (i64::from(w), i64::from(h));
    let stride = w as usize * 3;
    let fill = match pad {
        PadMode::Constant(c) => c,
        _ => [0; 3],
    };
    // Output columns whose source column is inside the image: one contiguous run.
    let x0 = i64::from(dx).clamp(0, wi);
    let x1 = (wi + i64::from(dx)).clamp(0, wi);
    let column_src: Vec<Option<usize>> = (0..wi)
        .map(|x| source_index(x - i64::from(dx), wi, pad))
        .collect();
    let src = image.as_raw();
    let dst: &mut [u8] = &mut out;
    for y in 0..hi {
        let row = &mut dst[y as usize * stride..(y as usize + 1) * stride];
        let Some(sy) = source_index(y - i64::from(dy), hi, pad) else {
            row.chunks_exact_mut(3)
                .for_each(|p| p.copy_from_slice(&fill));
            continue;
        };
        let src_row = &src[sy * stride..(sy + 1) * stride];
        if x0 < x1 {
            let (a, b) = (x0 as usize * 3, x1 as usize * 3);
            let sa = (x0 - i64::from(dx)) as usize * 3;
            row[a..b].copy_from_slice(&src_row[sa..sa + (b - a)]);
        }
        for x in (0..x0).chain(x1..wi) {
            let px = &mut row[x as usize * 3..x as usize * 3 + 3];
            match column_src[x as usize] {
                Some(sx) => px.copy_from_slice(&src_row[sx * 3..sx * 3 + 3]),
                None => px.copy_from_slice(&fill),
            }
        }
    }
    out
}
