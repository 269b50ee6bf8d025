//! Pixel-level AUROC over all pixels of all test images (MVTec AD's "pixel AUROC").
use super::roc::auc_pairs;
use super::{check_maps, Pixels};
use crate::Result;
use ndarray::ArrayView2;

/// Pixel AUROC: every pixel of every map is one sample, anomalous where its mask is `true`;
/// **higher = more anomalous**; ties count ½ (exactly `roc_auc_score` on the flattened pixels).
///
/// Memory: one u32 key per pixel plus a scratch copy of the normal ones (≈ 43 MB for
/// 83 × 256² pixels); time is linear (two passes over the pixels and a radix sort).
///
/// Errors: maps/masks counts or shapes differ → [`Error::DimensionMismatch`](crate::Error);
/// no maps → `EmptyDataset`; NaN/inf → `NonFinite` naming the map and row; masks all empty or
/// all full → `SingleClass`.
pub fn pixel_auroc(maps: &[ArrayView2<f32>], masks: &[ArrayView2<bool>]) -> Result<f64> {
    check_maps(maps, masks, "pixel_auroc")?;
    auc_pairs(&Pixels { maps, masks }, "pixel_auroc")
}
