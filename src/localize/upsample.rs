//! Score grid → pixels (PAPER.md "Localization": "receptive-field upsampling with Gaussian
//! smoothing", a transposed convolution with stride 4 and one 32×32 Gaussian kernel; σ = 10 for
//! kernels ≥ 32 px following FCDD, Liznerski et al. 2021 **[our choice: configurable]**).
use crate::error::{Error, Result};
use ndarray::{Array2, ArrayView2};

/// The `k × k` Gaussian kernel `K[a, b] = exp(−((a − c)² + (b − c)²) / (2σ²))`, `c = (k − 1)/2`
/// (peak 1 at the centre, not normalised: only the map's ordering matters to the metrics).
pub fn gaussian_kernel(k: usize, sigma: f64) -> Array2<f32> {
    let c = (k as f64 - 1.0) / 2.0;
    Array2::from_shape_fn((k, k), |(a, b)| {
        let r2 = (a as f64 - c).powi(2) + (b as f64 - c).powi(2);
        (-r2 / (2.0 * sigma * sigma)).exp() as f32
    })
}

/// Normalised transposed convolution of a `[g, g']` score grid with stride `stride` and the
/// [`gaussian_kernel`] of side `k`: every grid score spreads over the `k × k` pixels of its
/// patch, weighted by the kernel, and each pixel is divided by the sum of the kernel weights
/// that reach it, so a pixel's value is a weighted **average** of the scores of the patches
/// covering it. Without the division, pixels near the border (covered by fewer patches) were
/// attenuated ~20× along edges and ~350× at corners, and every map peaked at the centre.
/// Output `[(g − 1)·stride + k, (g' − 1)·stride + k]` (256 for 57 cells, 32 px, stride 4):
/// `out[y, x] = Σ_{i,j} s[i, j] · K[y − stride·i, x − stride·j] / Σ_{i,j} K[y − stride·i, x − stride·j]`.
/// A constant grid gives a constant map.
pub fn upsample_scores(
    scores: ArrayView2<f32>,
    k: usize,
    stride: usize,
    sigma: f64,
) -> Result<Array2<f32>> {
    let (gh, gw) = scores.dim();
    if gh == 0 || gw == 0 || k == 0 || stride == 0 || sigma.is_nan() || sigma <= 0.0 {
        return Err(Error::invalid_input(
            "scores",
            "need a non-empty grid, kernel side >= 1, stride >= 1 and sigma > 0",
        ));
    }
    let kernel = gaussian_kernel(k, sigma);
    let (oh, ow) = ((gh - 1) * stride + k, (gw - 1) * stride + k);
    // row-major [oh · ow] buffers; patch (i, j) adds `v · K` (and `K`) to rows stride·i..,
    // columns stride·j..
    let mut buf = vec![0f32; oh * ow];
    let mut weight = vec![0f32; oh * ow];
    for ((i, j), &v) in scores.indexed_iter() {
        let (y0, x0) = (i * stride, j * stride);
        for (a, krow) in kernel.outer_iter().enumerate() {
            let start = (y0 + a) * ow + x0;
            let span = start..start + k;
            for ((o, wsum), kv) in buf[span.clone()]
                .iter_mut()
                .zip(&mut weight[span])
                .zip(krow.iter())
            {
                *o += v * kv;
                *wsum += kv;
            }
        }
    }
    for (o, w) in buf.iter_mut().zip(&weight) {
        if *w > 0.0 {
            *o /= w;
        }
    }
    Array2::from_shape_vec((oh, ow), buf)
        .map_err(|e| Error::internal(format!("shape of `scores`: {e}")))
}

/// The `[8·rows, 8·cols]` map of a dense `[rows, cols]` cell grid (8-px cells, see
/// [`FeatureMode::Dense`](super::FeatureMode::Dense)): [`upsample_scores`] with a 16-px kernel
/// centred on each cell (stride 8), cropped by 4 px on each side so cell `(i, j)`'s kernel
/// centre lands on its pixel centre `(8j + 3.5, 8i + 3.5)`.
pub fn upsample_dense(scores: ArrayView2<f32>, sigma: f64) -> Result<Array2<f32>> {
    let full = upsample_scores(scores, 16, 8, sigma)?;
    let (gh, gw) = scores.dim();
    // [8g + 8, 8g' + 8] -> [8g, 8g']
    Ok(full
        .slice(ndarray::s![4..4 + 8 * gh, 4..4 + 8 * gw])
        .to_owned())
}

/// Bilinear resize of a `[h, w]` map to `[height, width]` with half-pixel centres (as
/// PyTorch's `interpolate(…, align_corners=False)`, edges clamped). The crate's one resize of
/// score maps: the localizer's maps, [`AnomalyMap::resize`](crate::heatmap::AnomalyMap::resize)
/// and GradCAM's maps. (Multi-channel feature maps are interpolated inside libtorch, on their
/// device, where they are computed.)
pub fn resize_bilinear(map: ArrayView2<f32>, width: u32, height: u32) -> Result<Array2<f32>> {
    let (h, w) = map.dim();
    if h == 0 || w == 0 || width == 0 || height == 0 {
        return Err(Error::invalid_param(
            "map",
            "cannot resize an empty map or to an empty size",
        ));
    }
    let (height, width) = (height as usize, width as usize);
    if (h, w) == (height, width) {
        return Ok(map.to_owned());
    }
    let axis = |out: usize, inp: usize| -> Vec<(usize, usize, f32)> {
        let scale = inp as f64 / out as f64;
        (0..out)
            .map(|o| {
                let src = ((o as f64 + 0.5) * scale - 0.5).clamp(0.0, (inp - 1) as f64);
                let lo = src.floor() as usize;
                let hi = (lo + 1).min(inp - 1);
                (lo, hi, (src - lo as f64) as f32)
            })
            .collect()
    };
    let (ys, xs) = (axis(height, h), axis(width, w));
    Ok(Array2::from_shape_fn((height, width), |(y, x)| {
        let ((y0, y1, fy), (x0, x1, fx)) = (ys[y], xs[x]);
        let top = map[[y0, x0]] * (1.0 - fx) + map[[y0, x1]] * fx;
        let bottom = map[[y1, x0]] * (1.0 - fx) + map[[y1, x1]] * fx;
        top * (1.0 - fy) + bottom * fy
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hot_grid_is_the_kernel_weighted_average() {
        // 3 × 3 grid, stride 4, k = 8 → 16 × 16 pixels; score 2 at cell (1, 2) only.
        let mut s = Array2::zeros((3, 3));
        s[[1, 2]] = 2.0;
        let out = upsample_scores(s.view(), 8, 4, 2.0).unwrap();
        assert_eq!(out.dim(), (16, 16));
        let k = gaussian_kernel(8, 2.0);
        // hand value at (y, x) = (7, 15): it is covered by cells (0, 2) (kernel index (7, 7))
        // and (1, 2) (kernel index (3, 7)) only; cell (0, 2) scores 0
        let want = 2.0 * k[[3, 7]] / (k[[3, 7]] + k[[7, 7]]);
        assert!(
            (out[[7, 15]] - want).abs() < 1e-6,
            "{} vs {want}",
            out[[7, 15]]
        );
        // pixels no patch of cell (1, 2) reaches stay 0
        assert_eq!(out[[0, 0]], 0.0);
        assert_eq!(out[[15, 3]], 0.0);
    }

    #[test]
    fn a_constant_grid_gives_a_constant_map_up_to_the_corners() {
        let s = Array2::from_elem((5, 7), 3.0f32);
        let out = upsample_scores(s.view(), 8, 4, 2.0).unwrap();
        for v in out.iter() {
            assert!((v - 3.0).abs() < 1e-5, "{v}");
        }
        let d = upsample_dense(s.view(), 4.0).unwrap();
        assert_eq!(d.dim(), (40, 56));
        assert!(d.iter().all(|v| (v - 3.0).abs() < 1e-5));
    }

    #[test]
    fn a_border_cell_peaks_at_the_border() {
        // a high score in the corner cell and on the left edge: the map's maximum is there,
        // not pulled towards the centre
        for (ci, cj) in [(0usize, 0usize), (3, 0), (0, 6)] {
            let mut s = Array2::from_elem((7, 7), 1.0f32);
            s[[ci, cj]] = 10.0;
            let out = upsample_dense(s.view(), 4.0).unwrap();
            let (mut best, mut at) = (f32::MIN, (0, 0));
            for ((y, x), &v) in out.indexed_iter() {
                if v > best {
                    (best, at) = (v, (y, x));
                }
            }
            assert_eq!((at.0 / 8, at.1 / 8), (ci, cj), "peak {best} at {at:?}");
            // an interior pixel is covered by 2 cells per axis: 10 blends with its neighbour's 1
            // to ≥ 8.6 (σ = 4); unnormalised, an edge cell lost ~4× and a corner ~16×
            assert!(best > 8.5, "{best}");
        }
    }

    #[test]
    fn overlapping_patches_average() {
        let s = Array2::from_shape_vec((2, 1), vec![1.0, 3.0]).unwrap();
        let out = upsample_scores(s.view(), 4, 2, 1.0).unwrap();
        assert_eq!(out.dim(), (6, 4));
        let k = gaussian_kernel(4, 1.0);
        // row 2 gets kernel row 2 (first patch) and kernel row 0 (second patch)
        let want = (k[[2, 1]] + 3.0 * k[[0, 1]]) / (k[[2, 1]] + k[[0, 1]]);
        assert!((out[[2, 1]] - want).abs() < 1e-6);
    }

    #[test]
    fn bilinear_resize_matches_hand_values() {
        let m = Array2::from_shape_vec((2, 2), vec![0.0, 1.0, 2.0, 3.0]).unwrap();
        let r = resize_bilinear(m.view(), 4, 2).unwrap();
        // x centres map to −0.25, 0.25, 0.75, 1.25 → clamped 0, 0.25, 0.75, 1
        assert_eq!(r.row(0).to_vec(), vec![0.0, 0.25, 0.75, 1.0]);
        assert_eq!(r.row(1).to_vec(), vec![2.0, 2.25, 2.75, 3.0]);
        assert!(resize_bilinear(m.view(), 0, 3).is_err());
    }
}
