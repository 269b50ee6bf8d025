//! AUPRO, the area under the per-region-overlap curve (Bergmann et al., "The MVTec Anomaly
//! Detection Dataset", IJCV 2021, §5.2; the MVTec AD evaluation protocol).
//!
//! For a threshold t: FPR(t) = share of all normal pixels (all images) with score ≥ t;
//! PRO(t) = mean over all ground-truth regions (8-connected components of the masks, all
//! images) of the share of the region's pixels with score ≥ t. The curve runs through every
//! distinct score (exact, no threshold sampling), starts at (0, 0), and its area up to
//! FPR = `max_fpr` (linear interpolation at `max_fpr`) is divided by `max_fpr`.
use super::components::label_components;
use super::sort::{key, pack, radix_sort};
use super::{check_maps, class_counts, PairSource, Pixels};
use crate::{Error, Result};
use ndarray::{ArrayView2, Zip};

/// Buckets (high 16 key bits) of the histogram that bounds which pixels need sorting.
const HIST_BUCKETS: usize = 1 << 16;

/// AUPRO integrated up to FPR `max_fpr` (MVTec AD uses 0.3) and normalised by it, in [0, 1];
/// **higher map values = more anomalous**; mask `true` = defect.
///
/// Only pixels at or above the score where the FPR crosses `max_fpr` are sorted (a 65,536-bucket
/// histogram of the normal pixels finds that score), so time and memory scale with
/// `max_fpr` · #normal pixels + #defect pixels.
///
/// Errors: `max_fpr` outside (0, 1] → [`Error::InvalidParam`]; map/mask problems as in
/// [`pixel_auroc`](super::pixel_auroc); no defect region or no normal pixel →
/// [`Error::SingleClass`].
pub fn aupro(maps: &[ArrayView2<f32>], masks: &[ArrayView2<bool>], max_fpr: f64) -> Result<f64> {
    if !(max_fpr > 0.0 && max_fpr <= 1.0) {
        return Err(Error::invalid_param(
            "max_fpr",
            format!("must be in (0, 1] (MVTec AD uses 0.3), got {max_fpr}"),
        ));
    }
    check_maps(maps, masks, "aupro")?;
    // 1/size of every region, indexed by a global region id (0 = normal pixel)
    let mut inv_size = vec![0.0f64];
    let mut labels = Vec::with_capacity(masks.len());
    #[cfg(feature = "parallel")]
    let components: Vec<_> = {
        use rayon::prelude::*;
        masks.par_iter().map(|m| label_components(*m)).collect()
    };
    #[cfg(not(feature = "parallel"))]
    let components: Vec<_> = masks.iter().map(|m| label_components(*m)).collect();
    for c in components {
        inv_size.extend(c.sizes.iter().map(|&s| 1.0 / s as f64));
        let count = c.count() as u32;
        labels.push((c.labels, count));
    }
    let n_regions = inv_size.len() - 1;
    // histogram of the normal pixels' keys (high 16 bits)
    let mut hist = vec![0usize; HIST_BUCKETS];
    Pixels { maps, masks }.for_each(|s, defect| {
        if !defect {
            hist[(key(s) >> 16) as usize] += 1;
        }
    });
    let n_normal: usize = hist.iter().sum();
    let n_defect = maps.iter().map(|m| m.len()).sum::<usize>() - n_normal;
    class_counts(n_normal, n_regions, "aupro")?;

    let (cutoff, n_normal_kept) = cutoff_bucket(&hist, max_fpr, n_normal);
    let mut packs = Vec::with_capacity(n_normal_kept + n_defect);
    let mut offset = 0u32; // global id of region 1 of the current image, minus 1
    for (map, (lab, count)) in maps.iter().zip(&labels) {
        Zip::from(map).and(lab).for_each(|&s, &l| {
            let k = key(s);
            if (k >> 16) as usize >= cutoff {
                packs.push(pack(k, if l == 0 { 0 } else { offset + l }));
            }
        });
        offset += count;
    }
    radix_sort(&mut packs);
    Ok(integrate(&packs, &inv_size, n_normal, max_fpr) / max_fpr)
}

/// Highest histogram bucket such that the normal pixels in it and above reach FPR > `max_fpr`
/// (one pixel of margin against rounding), and how many normal pixels it keeps.
fn cutoff_bucket(hist: &[usize], max_fpr: f64, n_normal: usize) -> (usize, usize) {
    let need = ((max_fpr * n_normal as f64).ceil() as usize + 1).min(n_normal);
    let mut acc = 0;
    for b in (0..HIST_BUCKETS).rev() {
        acc += hist[b];
        if acc >= need {
            return (b, acc);
        }
    }
    (0, acc)
}

/// Walks the ascending-sorted (key, region id) packs from the highest score down and integrates
/// the PRO curve up to `max_fpr` (trapezoids, the last one clipped by linear interpolation).
fn integrate(packs: &[u64], inv_size: &[f64], n_normal: usize, max_fpr: f64) -> f64 {
    let n_regions = (inv_size.len() - 1) as f64;
    let (mut fp, mut pro_sum) = (0usize, 0.0f64);
    let (mut px, mut py, mut area) = (0.0f64, 0.0f64, 0.0f64);
    let mut i = packs.len();
    while i > 0 {
        let k = packs[i - 1] >> 32;
        while i > 0 && packs[i - 1] >> 32 == k {
            let region = (packs[i - 1] & 0xffff_ffff) as usize;
            if region == 0 {
                fp += 1;
            } else {
                pro_sum += inv_size[region];
            }
            i -= 1;
        }
        let (x, y) = (fp as f64 / n_normal as f64, pro_sum / n_regions);
        if x >= max_fpr {
            let y_end = if x > max_fpr {
                py + (y - py) * (max_fpr - px) / (x - px)
            } else {
                y
            };
            return area + 0.5 * (py + y_end) * (max_fpr - px);
        }
        area += 0.5 * (py + y) * (x - px);
        (px, py) = (x, y);
    }
    area // not reached: the last point has FPR 1 ≥ max_fpr unless pixels were cut off
}
