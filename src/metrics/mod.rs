//! Evaluation metrics: image AUROC (and per defect type), ROC curves, pixel AUROC, AUPRO and
//! F1-max with its threshold.
//!
//! Conventions: **higher score = more anomalous**; `labels[i] = true` / mask pixel `true` marks
//! an anomaly; a sample is predicted anomalous at threshold t when its score is ≥ t. Scores are
//! f32 and must be finite; results are f64. Every metric is exact (no score binning): scores are
//! sorted by an order-preserving integer key with an O(n) radix sort, and ties are handled as
//! scikit-learn does. Only `ndarray` is needed (no libtorch, no LAPACK).
//!
//! Maps and masks are passed as slices of 2-D views, one per test image (`maps[i]` and
//! `masks[i]` must have the same shape; images may differ in size).
//!
//! ```
//! use cutpaste::metrics::{aupro, pixel_auroc};
//! use ndarray::Array2;
//! let mask = Array2::from_shape_fn((8, 8), |(y, x)| (2..5).contains(&y) && (2..5).contains(&x));
//! let map = Array2::from_shape_fn((8, 8), |(y, x)| if mask[[y, x]] { 0.9 } else { 0.1 * (x as f32 / 8.0) });
//! assert_eq!(pixel_auroc(&[map.view()], &[mask.view()])?, 1.0);
//! assert!((aupro(&[map.view()], &[mask.view()], 0.3)? - 1.0).abs() < 1e-12);
//! # Ok::<(), cutpaste::Error>(())
//! ```

mod aupro;
mod components;
mod f1;
mod pixel;
mod roc;
mod sort;

pub use aupro::aupro;
pub use components::{label_components, Components};
pub use f1::{f1_max, F1Max};
pub use pixel::pixel_auroc;
pub use roc::{per_type_auroc, roc_auc, roc_curve, RocCurve};

use crate::{Error, Result};
use ndarray::{ArrayView2, Zip};

/// Visits (score, is-anomalous) pairs by internal iteration (inlined tight loops; an external
/// iterator over 2-D views is several times slower).
pub(crate) trait PairSource {
    /// Calls `f` on every pair, in a fixed order.
    fn for_each<F: FnMut(f32, bool)>(&self, f: F);
}

impl PairSource for (&[f32], &[bool]) {
    fn for_each<F: FnMut(f32, bool)>(&self, mut f: F) {
        for (&s, &l) in self.0.iter().zip(self.1) {
            f(s, l);
        }
    }
}

/// Every pixel of every map with its mask value (shapes already checked equal).
pub(crate) struct Pixels<'a, 'm, 'k> {
    pub(crate) maps: &'a [ArrayView2<'m, f32>],
    pub(crate) masks: &'a [ArrayView2<'k, bool>],
}

impl PairSource for Pixels<'_, '_, '_> {
    fn for_each<F: FnMut(f32, bool)>(&self, mut f: F) {
        for (map, mask) in self.maps.iter().zip(self.masks) {
            Zip::from(map).and(mask).for_each(|&s, &l| f(s, l));
        }
    }
}

/// First row of `map` holding NaN/inf.
fn first_non_finite_row(map: &ArrayView2<f32>) -> Option<usize> {
    map.rows().into_iter().position(|r| match r.as_slice() {
        Some(r) => !r.iter().all(|v| v.is_finite()),
        None => !r.iter().all(|v| v.is_finite()),
    })
}

/// Lengths equal, at least one sample, all scores finite.
pub(crate) fn check_scores(scores: &[f32], labels: &[bool], what: &str) -> Result<()> {
    if labels.len() != scores.len() {
        return Err(Error::DimensionMismatch {
            what: format!("{what}: number of labels (one per score)"),
            expected: scores.len(),
            got: labels.len(),
        });
    }
    if scores.is_empty() {
        return Err(Error::EmptyDataset {
            path: format!("{what} scores (0 samples were given)").into(),
        });
    }
    match scores.iter().position(|s| !s.is_finite()) {
        Some(row) => Err(Error::NonFinite {
            what: format!("{what} scores"),
            row,
        }),
        None => Ok(()),
    }
}

/// Both classes present.
pub(crate) fn class_counts(normal: usize, anomalous: usize, what: &str) -> Result<()> {
    let present = match (normal, anomalous) {
        (0, 0) => "no",
        (0, _) => "anomalous",
        (_, 0) => "normal",
        _ => return Ok(()),
    };
    Err(Error::SingleClass {
        what: what.to_string(),
        present: present.to_string(),
    })
}

/// One mask per map, same shapes, at least one image, finite scores (row = row of that map).
pub(crate) fn check_maps(
    maps: &[ArrayView2<f32>],
    masks: &[ArrayView2<bool>],
    what: &str,
) -> Result<()> {
    if masks.len() != maps.len() {
        return Err(Error::DimensionMismatch {
            what: format!("{what}: number of masks (one per anomaly map)"),
            expected: maps.len(),
            got: masks.len(),
        });
    }
    if maps.is_empty() {
        return Err(Error::EmptyDataset {
            path: format!("{what} anomaly maps (0 maps were given)").into(),
        });
    }
    for (i, (map, mask)) in maps.iter().zip(masks).enumerate() {
        for (axis, name) in [(0, "height"), (1, "width")] {
            if map.shape()[axis] != mask.shape()[axis] {
                return Err(Error::DimensionMismatch {
                    what: format!("{what}: {name} of mask {i} (must equal its anomaly map's)"),
                    expected: map.shape()[axis],
                    got: mask.shape()[axis],
                });
            }
        }
        if let Some(row) = first_non_finite_row(map) {
            return Err(Error::NonFinite {
                what: format!("{what}: anomaly map {i}"),
                row,
            });
        }
    }
    Ok(())
}
