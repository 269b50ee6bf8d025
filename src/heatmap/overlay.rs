//! Rendering an [`AnomalyMap`] onto its image: a Turbo colour layer blended with a configurable
//! alpha, and optionally the outline of the region above a threshold.
use super::colormap::turbo;
use super::AnomalyMap;
use crate::error::{Error, Result};
use image::{GrayImage, Luma, Rgb, RgbImage};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How map values are brought to `[0, 1]` before colouring.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MapRange {
    /// The map's own minimum → 0 and maximum → 1 (a constant map is all 0). The default.
    #[default]
    MinMax,
    /// A fixed `[lo, hi]`, values outside clamped: one colour scale shared by a gallery.
    Fixed {
        /// Value drawn with the coldest colour; must be finite and < `hi`.
        lo: f32,
        /// Value drawn with the hottest colour; must be finite.
        hi: f32,
    },
}

impl MapRange {
    /// Checks that a fixed range is finite with `lo < hi`.
    pub fn check(&self) -> Result<()> {
        if let MapRange::Fixed { lo, hi } = *self {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(Error::invalid_param(
                    "range",
                    format!("a fixed range needs finite lo < hi, got [{lo}, {hi}]"),
                ));
            }
        }
        Ok(())
    }

    /// `(lo, hi)` of this range for `map`.
    fn bounds(&self, map: &AnomalyMap) -> (f32, f32) {
        match *self {
            MapRange::MinMax => map
                .view()
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                }),
            MapRange::Fixed { lo, hi } => (lo, hi),
        }
    }
}

/// How [`AnomalyMap::overlay`] draws. Defaults: alpha 0.5, [`MapRange::MinMax`], no contour,
/// contour width 1 px, contour colour white.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OverlayOptions {
    /// Weight of the colour layer in `[0, 1]`: `out = (1 − alpha)·image + alpha·colour`.
    pub alpha: f32,
    /// How values are mapped to the colour scale.
    pub range: MapRange,
    /// Outline the region `map > threshold` (in map units, before normalisation); `None`: no outline.
    pub threshold: Option<f32>,
    /// Outline thickness in pixels, 1 ..= 8 (drawn inside the region).
    pub contour_width: u32,
    /// Outline colour (RGB).
    pub contour_color: [u8; 3],
}

impl Default for OverlayOptions {
    fn default() -> Self {
        Self {
            alpha: 0.5,
            range: MapRange::MinMax,
            threshold: None,
            contour_width: 1,
            contour_color: [255, 255, 255],
        }
    }
}

impl OverlayOptions {
    /// Sets the colour layer's weight.
    pub fn alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }

    /// Sets the value range.
    pub fn range(mut self, range: MapRange) -> Self {
        self.range = range;
        self
    }

    /// Shorthand for `range(MapRange::Fixed { lo, hi })`.
    pub fn fixed_range(self, lo: f32, hi: f32) -> Self {
        self.range(MapRange::Fixed { lo, hi })
    }

    /// Outlines the region `map > threshold`.
    pub fn threshold(mut self, threshold: f32) -> Self {
        self.threshold = Some(threshold);
        self
    }

    /// Sets the outline thickness in pixels.
    pub fn contour_width(mut self, width: u32) -> Self {
        self.contour_width = width;
        self
    }

    /// Sets the outline colour.
    pub fn contour_color(mut self, rgb: [u8; 3]) -> Self {
        self.contour_color = rgb;
        self
    }

    /// Validates every field; errors name it.
    pub fn check(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(Error::invalid_param(
                "alpha",
                format!("must be in [0, 1] (default 0.5), got {}", self.alpha),
            ));
        }
        self.range.check()?;
        if let Some(t) = self.threshold {
            if !t.is_finite() {
                return Err(Error::invalid_param("threshold", "must be finite"));
            }
        }
        if !(1..=8).contains(&self.contour_width) {
            return Err(Error::invalid_param(
                "contour_width",
                format!(
                    "must be in 1..=8 pixels (default 1), got {}",
                    self.contour_width
                ),
            ));
        }
        Ok(())
    }
}

impl AnomalyMap {
    /// The values brought to `[0, 1]` by `range` (see [`MapRange`]), `[height, width]`.
    pub fn normalized(&self, range: MapRange) -> Result<Array2<f32>> {
        range.check()?;
        let (lo, hi) = range.bounds(self);
        let span = hi - lo;
        Ok(self.view().mapv(|v| {
            if span > 0.0 {
                ((v - lo) / span).clamp(0.0, 1.0)
            } else {
                0.0
            }
        }))
    }

    /// The region `map > threshold`, `[height, width]`.
    pub fn region(&self, threshold: f32) -> Array2<bool> {
        self.view().mapv(|v| v > threshold)
    }

    /// The outline of the region `map > threshold`: region pixels within `width` steps
    /// (4-neighbour, city-block) of a pixel outside it. Pixels beyond the image border count as
    /// outside, so a region touching the border gets a closed outline. `[height, width]`.
    pub fn contour(&self, threshold: f32, width: u32) -> Array2<bool> {
        let region = self.region(threshold);
        let mut inner = region.clone();
        for _ in 0..width {
            inner = erode4(&inner);
        }
        ndarray::Zip::from(&region)
            .and(&inner)
            .map_collect(|&r, &i| r && !i)
    }

    /// Blends the Turbo colour of each normalised value onto `image` and, when
    /// [`OverlayOptions::threshold`] is set, draws the region's outline (see [`Self::contour`]).
    ///
    /// Per pixel and channel: `round((1 − alpha)·image + alpha·255·turbo(t))`, `t` from
    /// [`OverlayOptions::range`]; outline pixels take [`OverlayOptions::contour_color`].
    ///
    /// Errors: `image` of another size than the map → [`Error::SizeMismatch`] naming both; an
    /// invalid option → [`Error::InvalidParam`] naming it.
    pub fn overlay(&self, image: &RgbImage, opts: &OverlayOptions) -> Result<RgbImage> {
        opts.check()?;
        self.check_size(image.dimensions(), "overlay image vs anomaly map")?;
        let t = self.normalized(opts.range)?;
        let contour = opts
            .threshold
            .map(|th| self.contour(th, opts.contour_width));
        let a = opts.alpha;
        let mut out = image.clone();
        for (x, y, px) in out.enumerate_pixels_mut() {
            let at = (y as usize, x as usize);
            if contour.as_ref().is_some_and(|c| c[at]) {
                *px = Rgb(opts.contour_color);
                continue;
            }
            let colour = turbo(t[at]);
            for (c, p) in px.0.iter_mut().enumerate() {
                let v = (1.0 - a) * f32::from(*p) + a * 255.0 * colour[c];
                *p = v.round().clamp(0.0, 255.0) as u8;
            }
        }
        Ok(out)
    }

    /// [`Self::overlay`] written atomically to `path` (format from the extension, e.g. `.png`)
    /// with [`crate::data::image_io::save_atomic`].
    pub fn save_overlay(
        &self,
        image: &RgbImage,
        opts: &OverlayOptions,
        path: impl AsRef<Path>,
    ) -> Result<()> {
        crate::data::image_io::save_atomic(&self.overlay(image, opts)?, path)
    }

    /// The normalised map as an 8-bit grey image (`round(255·t)`, white = most anomalous).
    pub fn to_gray(&self, range: MapRange) -> Result<GrayImage> {
        let t = self.normalized(range)?;
        Ok(GrayImage::from_fn(self.width(), self.height(), |x, y| {
            Luma([(t[(y as usize, x as usize)] * 255.0).round() as u8])
        }))
    }

    /// [`Self::to_gray`] written atomically to `path` (e.g. a `.png`).
    pub fn save_gray(&self, range: MapRange, path: impl AsRef<Path>) -> Result<()> {
        crate::data::image_io::save_atomic(&self.to_gray(range)?, path)
    }

    /// Errors unless the map is `size` = `(width, height)`.
    pub(crate) fn check_size(&self, size: (u32, u32), what: &str) -> Result<()> {
        let own = (self.width(), self.height());
        if size != own {
            return Err(Error::SizeMismatch {
                what: what.into(),
                expected: own,
                got: size,
            });
        }
        Ok(())
    }
}

/// One 4-neighbour erosion step; pixels beyond the border count as `false`.
fn erode4(m: &Array2<bool>) -> Array2<bool> {
    let (h, w) = m.dim();
    Array2::from_shape_fn((h, w), |(y, x)| {
        m[(y, x)]
            && y > 0
            && x > 0
            && y + 1 < h
            && x + 1 < w
            && m[(y - 1, x)]
            && m[(y + 1, x)]
            && m[(y, x - 1)]
            && m[(y, x + 1)]
    })
}
