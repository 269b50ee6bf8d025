//! Pixel-level AUROC over all pixels of all test images (MVTec AD's "pixel AUROC").
use super::roc::{auc_sorted, split_keys};
use super::sort::radix_sort;
use super::{check_maps, class_counts};
use crate::Result;
use ndarray::ArrayView2;

/// Pixel AUROC: every pixel of every map is one sample, anomalous where its mask is `true`;
/// **higher = more anomalous**; ties count ½ (exactly `roc_auc_score` on the flattened pixels).
///
/// Memory: one u32 key per pixel plus a scratch copy (≈ 43 MB for 83 × 256² pixels); time is
/// linear (radix sort).
///
/// Errors: maps/masks counts or shapes differ → [`Error::DimensionMismatch`](crate::Error);
/// no maps → `EmptyDataset`; NaN/inf → `NonFinite` naming the map and row; masks all empty or
/// all full → `SingleClass`.
pub fn pixel_auroc(maps: &[ArrayView2<f32>], masks: &[ArrayView2<bool>]) -> Result<f64> {
    check_maps(maps, masks, "pixel_auroc")?;
    let pixels = maps
        .iter()
        .zip(masks)
        .flat_map(|(map, mask)| map.iter().copied().zip(mask.iter().copied()));
    let total = maps.iter().map(|m| m.len()).sum();
    let (mut neg, mut pos) = split_keys(pixels, total);
    class_counts(neg.len(), pos.len(), "pixel_auroc")?;
    radix_sort(&mut neg);
    radix_sort(&mut pos);
    Ok(auc_sorted(&neg, &pos))
}
