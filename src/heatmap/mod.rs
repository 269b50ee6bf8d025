//! Pixel anomaly maps: the [`AnomalyMap`] type shared by the patch localizer and GradCAM.
//!
//! Convention: **higher = more anomalous**, one `f32` per pixel of the image it belongs to.
//!
//! * [`AnomalyMap::overlay`]: the map in the Turbo colour map ([`turbo`]) blended onto its image,
//!   with the outline of the region above a threshold; [`OverlayOptions`], [`MapRange`] (own
//!   min/max or a fixed range shared by a gallery).
//! * [`AnomalyMap::resize`] (bilinear), [`AnomalyMap::to_gray`] / [`AnomalyMap::save_gray`].
//! * [`write_test_overlays`]: overlays of a whole evaluated test set, recorded in the report.
//! * [`Detector::gradcam`](crate::Detector::gradcam): GradCAM of the image-level Gaussian score
//!   (PAPER.md "Localization", CutPaste §4.2).
//!
//! ```
//! use cutpaste::heatmap::{AnomalyMap, OverlayOptions};
//! use ndarray::Array2;
//! # fn main() -> cutpaste::Result<()> {
//! let map = AnomalyMap::new(Array2::from_shape_fn((32, 48), |(y, x)| (x + y) as f32))?;
//! let image = image::RgbImage::new(48, 32);
//! let opts = OverlayOptions::default().alpha(0.6).fixed_range(0.0, 80.0).threshold(60.0);
//! let shown = map.overlay(&image, &opts)?;
//! assert_eq!(shown.dimensions(), (48, 32));
//! assert!(map.overlay(&image::RgbImage::new(32, 32), &opts).is_err()); // sizes differ
//! let half = map.resize(24, 16)?;
//! assert_eq!((half.width(), half.height()), (24, 16));
//! # Ok(()) }
//! ```
mod colormap;
mod gradcam;
mod overlay;
mod test_overlays;

pub use colormap::{turbo, turbo_u8};
pub use gradcam::{GradCam, TorchGaussian};
pub use overlay::{MapRange, OverlayOptions};
pub use test_overlays::{anomaly_map, write_test_overlays, MapSource};

use crate::error::{Error, Result};
use ndarray::{Array2, ArrayView2};

/// A per-pixel anomaly map, `height × width`, row-major, higher = more anomalous.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyMap {
    values: Array2<f32>,
}

impl AnomalyMap {
    /// Wraps a `[height, width]` array. Errors when it is empty or holds a non-finite value.
    pub fn new(values: Array2<f32>) -> Result<Self> {
        if values.is_empty() {
            return Err(Error::invalid_input(
                "values",
                "an anomaly map needs at least one pixel",
            ));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "anomaly map".into(),
                row: i / values.ncols(),
            });
        }
        Ok(Self { values })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.values.ncols() as u32
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.values.nrows() as u32
    }

    /// The value at pixel `(x, y)`.
    pub fn get(&self, x: u32, y: u32) -> Option<f32> {
        self.values.get((y as usize, x as usize)).copied()
    }

    /// The `[height, width]` values.
    pub fn view(&self) -> ArrayView2<'_, f32> {
        self.values.view()
    }

    /// Consumes the map into its `[height, width]` array.
    pub fn into_array(self) -> Array2<f32> {
        self.values
    }

    /// The largest value and its pixel `(x, y)`.
    pub fn max(&self) -> (f32, (u32, u32)) {
        let mut best = (f32::NEG_INFINITY, (0, 0));
        for ((y, x), &v) in self.values.indexed_iter() {
            if v > best.0 {
                best = (v, (x as u32, y as u32));
            }
        }
        best
    }

    /// Bilinear resize to `width × height` with half-pixel centres (as libtorch's
    /// `upsample_bilinear2d` with `align_corners = false`, no antialiasing).
    ///
    /// Errors: a zero side → [`Error::InvalidParam`].
    pub fn resize(&self, width: u32, height: u32) -> Result<AnomalyMap> {
        AnomalyMap::new(crate::localize::resize_bilinear(
            self.values.view(),
            width,
            height,
        )?)
    }
}
