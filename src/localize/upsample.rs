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

/// Transposed convolution of a `[g, g']` score grid with stride `stride` and the
/// [`gaussian_kernel`] of side `k`: every grid score spreads over the `k × k` pixels of its
/// patch, weighted by the kernel. Output `[(g − 1)·stride + k, (g' − 1)·stride + k]` (256 for
/// 57 cells, 32 px, stride 4): `out[y, x] = Σ_{i,j} s[i, j] · K[y − stride·i, x − stride·j]`.
pub fn upsample_scores(
    scores: ArrayView2<f32>,
    k: usize,
    stride: usize,
    sigma: f64,
) -> Result<Array2<f32>> {
    let (gh, gw) = scores.dim();
    if gh == 0 || gw == 0 || k == 0 || stride == 0 || sigma.is_nan() || sigma <= 0.0 {
        return Err(Error::invalid_param(
            "scores",
            "need a non-empty grid, kernel side >= 1, stride >= 1 and sigma > 0",
        ));
    }
    let kernel = gaussian_kernel(k, sigma);
    let ow = (gw - 1) * stride + k;
    // row-major [oh · ow] buffer; patch (i, j) adds `v · K` to rows stride·i.., columns stride·j..
    let mut buf = vec![0f32; ((gh - 1) * stride + k) * ow];
    for ((i, j), &v) in scores.indexed_iter() {
        let (y0, x0) = (i * stride, j * stride);
        for (a, krow) in kernel.outer_iter().enumerate() {
            let start = (y0 + a) * ow + x0;
            for (o, w) in buf[start..start + k].iter_mut().zip(krow.iter()) {
                *o += v * w;
            }
        }
    }
    let out = Array2::from_shape_vec(((gh - 1) * stride + k, ow), buf)
        .map_err(|e| Error::invalid_param("scores", e.to_string()))?;
    Ok(out)
}

/// Bilinear resize of a `[h, w]` map to `[height, width]` with half-pixel centres (as
/// PyTorch's `interpolate(…, align_corners=False)`, edges clamped).
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
    fn one_hot_grid_gives_a_gaussian_bump_at_its_patch() {
        // 3 × 3 grid, stride 4, k = 8 → 16 × 16 pixels; score 2 at cell (1, 2) only.
        let mut s = Array2::zeros((3, 3));
        s[[1, 2]] = 2.0;
        let out = upsample_scores(s.view(), 8, 4, 2.0).unwrap();
        assert_eq!(out.dim(), (16, 16));
        // patch (1, 2) covers rows 4..12, columns 8..16; kernel centre c = 3.5
        for y in 0..16 {
            for x in 0..16 {
                let inside = (4..12).contains(&y) && (8..16).contains(&x);
                let want = if inside {
                    let (a, b) = (y as f64 - 4.0 - 3.5, x as f64 - 8.0 - 3.5);
                    2.0 * (-(a * a + b * b) / 8.0).exp()
                } else {
                    0.0
                };
                assert!((out[[y, x]] as f64 - want).abs() < 1e-6, "({y}, {x})");
            }
        }
        // hand value at the four centre pixels: 2·exp(−(0.25 + 0.25)/8)
        assert!((out[[7, 11]] - 2.0 * (-0.0625f32).exp()).abs() < 1e-6);
    }

    #[test]
    fn overlapping_patches_add() {
        let s = Array2::from_elem((2, 1), 1.0);
        let out = upsample_scores(s.view(), 4, 2, 1.0).unwrap();
        assert_eq!(out.dim(), (6, 4));
        let k = gaussian_kernel(4, 1.0);
        // row 2 gets kernel row 2 (first patch) + kernel row 0 (second patch)
        assert!((out[[2, 1]] - (k[[2, 1]] + k[[0, 1]])).abs() < 1e-7);
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
