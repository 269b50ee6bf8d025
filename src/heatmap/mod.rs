//! Pixel anomaly maps: the [`AnomalyMap`] type shared by the patch localizer and GradCAM.
//!
//! Convention: **higher = more anomalous**, one `f32` per pixel of the image it belongs to.
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
            return Err(Error::invalid_param(
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
}
