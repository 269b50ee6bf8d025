//! Colour jitter with torchvision `ColorJitter` semantics (paper Appendix A.2: "colour jitter on
//! the pasted patch … brightness, contrast, saturation and hue, each with max intensity 0.1").
//!
//! Sampling follows torchvision exactly: the four operations run in a random order (a uniform
//! permutation), brightness/contrast/saturation factors are drawn from `U[max(0, 1 − x), 1 + x]`,
//! the hue shift from `U[−h, h]` (in turns, `h ≤ 0.5`), and a component whose strength is 0 is
//! skipped (torchvision stores it as `None`), so a jitter of all zeros is the identity.
//!
//! Each operation works on 8-bit pixels and rounds its result back to 8 bits (to nearest, ties to
//! even, clamped to `[0, 255]`) before the next one
//! runs, like torchvision's PIL path (`ImageEnhance` + HSV). The greyscale used by contrast and
//! saturation is ITU-R 601-2 luma `0.299 R + 0.587 G + 0.114 B` as a float (not truncated).
//! The hue shift rotates the hue in HSV space as torchvision's `_rgb2hsv`/`_hsv2rgb` do, in
//! floating point, so hue wraps around modulo one turn.
use image::RgbImage;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::kernels::{self, Step};
use crate::{Error, Result};

/// Strengths of the four jitter components (torchvision `ColorJitter(brightness, contrast,
/// saturation, hue)` with scalar arguments).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColorJitter {
    /// Brightness factor drawn from `U[max(0, 1 − brightness), 1 + brightness]`; must be ≥ 0.
    pub brightness: f32,
    /// Contrast factor drawn from `U[max(0, 1 − contrast), 1 + contrast]`; must be ≥ 0.
    pub contrast: f32,
    /// Saturation factor drawn from `U[max(0, 1 − saturation), 1 + saturation]`; must be ≥ 0.
    pub saturation: f32,
    /// Hue shift drawn from `U[−hue, hue]` in turns; must be in `[0, 0.5]`.
    pub hue: f32,
}

impl Default for ColorJitter {
    fn default() -> Self {
        Self::paper()
    }
}

impl ColorJitter {
    /// Jitter with the given strengths (torchvision argument order).
    pub fn new(brightness: f32, contrast: f32, saturation: f32, hue: f32) -> Self {
        Self {
            brightness,
            contrast,
            saturation,
            hue,
        }
    }

    /// All four strengths equal to `x`.
    pub fn uniform(x: f32) -> Self {
        Self::new(x, x, x, x)
    }

    /// The paper's patch jitter (Appendix A.2): `ColorJitter(0.1, 0.1, 0.1, 0.1)`.
    pub fn paper() -> Self {
        Self::uniform(0.1)
    }

    /// No jitter at all (every component skipped).
    pub fn none() -> Self {
        Self::uniform(0.0)
    }

    /// True when every component is skipped, i.e. applying it never changes an image.
    pub fn is_identity(&self) -> bool {
        self.brightness == 0.0 && self.contrast == 0.0 && self.saturation == 0.0 && self.hue == 0.0
    }

    /// Validates the strengths; `name` prefixes the parameter names in the error.
    pub fn check(&self, name: &str) -> Result<()> {
        for (field, v) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::invalid_param(
                    format!("{name}.{field}"),
                    format!("must be a finite value >= 0 (0 turns it off), got {v}"),
                ));
            }
        }
        if !self.hue.is_finite() || !(0.0..=0.5).contains(&self.hue) {
            return Err(Error::invalid_param(
                format!("{name}.hue"),
                format!(
                    "must lie in [0, 0.5] turns (0 turns it off), got {}",
                    self.hue
                ),
            ));
        }
        Ok(())
    }

    /// Draws the order and the factors from `seed` (see [`JitterFactors`]).
    pub fn sample(&self, seed: u64) -> JitterFactors {
        self.sample_with(&mut ChaCha8Rng::seed_from_u64(seed))
    }

    /// Draws the order and the factors from `rng`, in torchvision's order: permutation first,
    /// then brightness, contrast, saturation, hue (skipped components draw nothing).
    pub(crate) fn sample_with(&self, rng: &mut ChaCha8Rng) -> JitterFactors {
        let mut order = JitterOp::ALL;
        order.shuffle(rng);
        let mut factor = |x: f32| -> Option<f32> {
            (x > 0.0).then(|| {
                let lo = (1.0 - x).max(0.0);
                lo + (1.0 + x - lo) * rng.random::<f32>()
            })
        };
        let brightness = factor(self.brightness);
        let contrast = factor(self.contrast);
        let saturation = factor(self.saturation);
        let hue = (self.hue > 0.0).then(|| self.hue * (2.0 * rng.random::<f32>() - 1.0));
        JitterFactors {
            order,
            brightness,
            contrast,
            saturation,
            hue,
        }
    }
}

/// One of the four colour-jitter operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JitterOp {
    /// Scale all channels: `x·f`.
    Brightness,
    /// Blend with the image's mean grey level: `f·x + (1 − f)·mean`.
    Contrast,
    /// Blend with each pixel's grey level: `f·x + (1 − f)·grey`.
    Saturation,
    /// Rotate the hue in HSV space by a fraction of a turn.
    Hue,
}

impl JitterOp {
    /// The four operations in torchvision's index order.
    pub const ALL: [JitterOp; 4] = [
        JitterOp::Brightness,
        JitterOp::Contrast,
        JitterOp::Saturation,
        JitterOp::Hue,
    ];
}

/// A drawn jitter: the order of the operations and each factor (`None` = skipped).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct JitterFactors {
    /// The order in which the operations run.
    pub order: [JitterOp; 4],
    /// Brightness factor (1 = unchanged).
    pub brightness: Option<f32>,
    /// Contrast factor (1 = unchanged).
    pub contrast: Option<f32>,
    /// Saturation factor (1 = unchanged).
    pub saturation: Option<f32>,
    /// Hue shift in turns (0 = unchanged).
    pub hue: Option<f32>,
}

impl JitterFactors {
    /// The jitter that changes nothing.
    pub fn identity() -> Self {
        Self {
            order: JitterOp::ALL,
            brightness: None,
            contrast: None,
            saturation: None,
            hue: None,
        }
    }

    /// True when every operation is skipped.
    pub fn is_identity(&self) -> bool {
        self.brightness.is_none()
            && self.contrast.is_none()
            && self.saturation.is_none()
            && self.hue.is_none()
    }

    /// Applies the operations in [`order`](Self::order) to `image` in place. The same as calling
    /// [`adjust_brightness`], [`adjust_contrast`], [`adjust_saturation`] and [`adjust_hue`] in
    /// that order, fused into at most two passes over the image.
    pub fn apply(&self, image: &mut RgbImage) {
        let steps: Vec<Step> = self
            .order
            .iter()
            .filter_map(|op| match op {
                JitterOp::Brightness => self.brightness.map(brightness_step),
                JitterOp::Contrast => self.contrast.map(Step::Contrast),
                JitterOp::Saturation => self.saturation.map(Step::Saturation),
                JitterOp::Hue => self.hue.map(|h| Step::Hue(shift_sextants(h))),
            })
            .collect();
        kernels::run(image, &steps);
    }
}

/// Draws a jitter from `seed` and applies it to a copy of `image`; returns the copy and the
/// factors that were used. Errors only on invalid strengths.
pub fn color_jitter(
    image: &RgbImage,
    jitter: &ColorJitter,
    seed: u64,
) -> Result<(RgbImage, JitterFactors)> {
    jitter.check("jitter")?;
    let factors = jitter.sample(seed);
    let mut out = image.clone();
    factors.apply(&mut out);
    Ok((out, factors))
}

fn brightness_step(factor: f32) -> Step {
    Step::Affine {
        scale: factor,
        offset: 0.0,
    }
}

/// A hue shift in turns as sextants wrapped into `[0, 6)`.
fn shift_sextants(shift: f32) -> f32 {
    let s = shift * 6.0;
    let s = s - 6.0 * (s / 6.0).floor();
    if (0.0..6.0).contains(&s) {
        s
    } else {
        0.0
    }
}

/// torchvision `adjust_brightness`: every channel becomes `round(clamp(x·factor))`.
pub fn adjust_brightness(image: &mut RgbImage, factor: f32) {
    kernels::run(image, &[brightness_step(factor)]);
}

/// Mean ITU-R 601-2 grey level `0.299 R + 0.587 G + 0.114 B` of an image (0 when empty).
pub fn mean_gray(image: &RgbImage) -> f32 {
    kernels::mean_grey(image)
}

/// torchvision `adjust_contrast`: blend with the image's mean grey level,
/// `round(clamp(factor·x + (1 − factor)·mean))`.
pub fn adjust_contrast(image: &mut RgbImage, factor: f32) {
    kernels::run(image, &[Step::Contrast(factor)]);
}

/// torchvision `adjust_saturation`: blend each pixel with its own grey level,
/// `round(clamp(factor·x + (1 − factor)·grey))`.
pub fn adjust_saturation(image: &mut RgbImage, factor: f32) {
    kernels::run(image, &[Step::Saturation(factor)]);
}

/// torchvision `adjust_hue`: converts to HSV, adds `shift` (in turns) to the hue modulo 1 and
/// converts back; value and saturation are kept. Grey pixels (max = min) are unchanged.
pub fn adjust_hue(image: &mut RgbImage, shift: f32) {
    kernels::run(image, &[Step::Hue(shift_sextants(shift))]);
}

/// Draws a jitter from `rng` and applies it in place (parameters already checked).
pub(crate) fn jitter_in_place(
    image: &mut RgbImage,
    jitter: &ColorJitter,
    rng: &mut ChaCha8Rng,
) -> JitterFactors {
    let factors = jitter.sample_with(rng);
    factors.apply(image);
    factors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hue_of_pure_red_moves_to_hand_computed_colours() {
        let mut img = RgbImage::from_pixel(1, 1, image::Rgb([255, 0, 0]));
        adjust_hue(&mut img, 0.5);
        assert_eq!(img.get_pixel(0, 0).0, [0, 255, 255]); // red + half a turn = cyan
        let mut img = RgbImage::from_pixel(1, 1, image::Rgb([255, 0, 0]));
        adjust_hue(&mut img, -0.1); // hue 0.9 turns = 324°: R = 255, B = 255·(360−324)/60 → 153
        assert_eq!(img.get_pixel(0, 0).0, [255, 0, 153]);
    }

    #[test]
    fn contrast_uses_the_mean_grey_level() {
        // Two pixels: black and white; mean grey = 127.5; factor 0 gives the mean everywhere.
        let mut img = RgbImage::from_raw(2, 1, vec![0, 0, 0, 255, 255, 255]).unwrap();
        adjust_contrast(&mut img, 0.0);
        assert_eq!(img.as_raw(), &vec![128u8; 6]);
    }
}
