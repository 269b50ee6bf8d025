//! Dense patch features on the grid of PAPER.md "Localization" (Appendix A.5: 32×32 patches at
//! stride 4 → 57 × 57 on 256²), exact or fast (see [`FeatureMode`]).
use super::params::{FeatureMode, LocalizerParams};
use crate::data::{images_to_tensor, Normalization};
use crate::error::{Error, Result};
use crate::model::Classifier;
use image::RgbImage;
use ndarray::Array2;
use tch::{Kind, Tensor};

/// Cells per side of the patch grid: `(side − patch) / stride + 1` (57 for 256, 32, 4; 49 for
/// 256, 64, 4).
pub fn grid_side(side: u32, patch: u32, stride: u32) -> usize {
    if patch > side || stride == 0 {
        return 0;
    }
    ((side - patch) / stride + 1) as usize
}

/// `[grid², 512]` features of one square image of side `side` (already resized to the
/// detector's input side), rows in grid row-major order (row `i·grid + j` is the patch whose
/// top-left pixel is `(x, y) = (stride·j, stride·i)`).
///
/// `params` are checked first for what the features use: a patch mode (for
/// [`FeatureMode::Dense`] use [`dense_features`](super::dense_features)), a stride ≥ 1, a patch
/// that fits the image with a grid that tiles it, the mode's factor or shifts, a feature batch
/// ≥ 1; a bad value is an [`Error::InvalidParam`] naming it (`localizer.stride`,
/// `localizer.mode`, `localizer.feature_batch`, …). A non-square image is an
/// [`Error::InvalidInput`].
pub fn patch_features(
    classifier: &Classifier,
    norm: &Normalization,
    image: &RgbImage,
    params: &LocalizerParams,
) -> Result<Array2<f32>> {
    let (w, h) = image.dimensions();
    if w != h {
        return Err(Error::invalid_input(
            "image",
            format!("patch features need a square image (resize it first), got {w}×{h}"),
        ));
    }
    params.check_features(w)?;
    let g = grid_side(w, params.patch_size, params.stride);
    let x = images_to_tensor(std::slice::from_ref(image), norm, classifier.device())?;
    let f = tch::no_grad(|| match params.mode {
        FeatureMode::Exact => exact(classifier, &x, params),
        FeatureMode::Fast { shifts } => fast(classifier, &x, params, shifts, g as i64),
        FeatureMode::Subsampled { factor } => subsampled(classifier, &x, params, factor, g as i64),
        FeatureMode::Dense => Err(Error::internal(
            "dense mode reached patch_features past its check",
        )),
    })?;
    to_array(&f, g * g)
}

/// Every patch through the backbone: `[1, 3, S, S]` → `[g², 512]`.
fn exact(clf: &Classifier, x: &Tensor, p: &LocalizerParams) -> Result<Tensor> {
    let (k, s) = (p.patch_size as i64, p.stride as i64);
    // [1, 3, S, S] -> [1, 3, g, g, k, k] -> [1, g, g, 3, k, k] -> [g², 3, k, k]
    let patches = x
        .f_unfold(2, k, s)?
        .f_unfold(3, k, s)?
        .f_permute([0, 2, 3, 1, 4, 5])?
        .f_reshape([-1, 3, k, k])?
        .f_contiguous()?;
    let n = patches.size()[0];
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let len = (p.feature_batch as i64).min(n - start);
        out.push(
            clf.features(&patches.f_narrow(0, start, len)?)?
                .f_to_device(tch::Device::Cpu)?,
        );
        start += len;
    }
    Ok(Tensor::f_cat(&out, 0)?)
}

/// Exact features at stride `factor · stride`, interpolated onto the `g × g` grid (see
/// [`FeatureMode::Subsampled`]). `[1, 3, S, S]` → `[g², 512]`.
fn subsampled(
    clf: &Classifier,
    x: &Tensor,
    p: &LocalizerParams,
    factor: u32,
    g: i64,
) -> Result<Tensor> {
    let coarse_params = p.clone().stride(p.stride * factor);
    let side = x.size()[2];
    let gc = (side - p.patch_size as i64) / coarse_params.stride as i64 + 1;
    let f = exact(clf, x, &coarse_params)?; // [gc², C]
    let c = f.size()[1];
    // [gc², C] -> [1, gc, gc, C] -> [1, C, gc, gc] -> [1, C, g, g]
    let grid = f
        .f_reshape([1, gc, gc, c])?
        .f_permute([0, 3, 1, 2])?
        .f_contiguous()?
        .f_upsample_bilinear2d([g, g], true, None, None)?;
    // [1, C, g, g] -> [C, g²] -> [g², C]
    Ok(grid.f_reshape([c, g * g])?.f_transpose(0, 1)?)
}

/// `shifts²` whole-image passes interleaved into a stride-`32/shifts` map of `layer4` cells,
/// averaged over the cells tiling each patch and interpolated onto the grid (see
/// [`FeatureMode::Fast`]). `[1, 3, S, S]` → `[g², 512]`.
fn fast(clf: &Classifier, x: &Tensor, p: &LocalizerParams, shifts: u32, g: i64) -> Result<Tensor> {
    let side = x.size()[2];
    let s = shifts as i64;
    let q = 32 / s; // stride of the interleaved map in pixels
    let pad = q * (s - 1);
    // reflection-pad right and bottom so each shifted view keeps the side S
    let xp = if pad > 0 {
        x.f_reflection_pad2d([0, pad, 0, pad])?
    } else {
        x.shallow_clone()
    };
    let mut views = Vec::with_capacity((s * s) as usize);
    for ay in 0..s {
        for ax in 0..s {
            views.push(xp.f_narrow(2, ay * q, side)?.f_narrow(3, ax * q, side)?);
        }
    }
    let batch = Tensor::f_cat(&views, 0)?; // [s², 3, S, S]
    let l4 = clf
        .forward_t(&batch, false)?
        .maps
        .layer4
        .f_to_kind(Kind::Float)?;
    let (c, h, w) = (l4.size()[1], l4.size()[2], l4.size()[3]);
    // [s·s, C, h, w] -> [s_y, s_x, C, h, w] -> [C, h, s_y, w, s_x] -> [1, C, h·s, w·s]
    let fine = l4
        .f_reshape([s, s, c, h, w])?
        .f_permute([2, 3, 0, 4, 1])?
        .f_reshape([1, c, h * s, w * s])?;
    let k = p.patch_size as i64;
    let m = ((k - 32) / q + 1).min(h * s); // cells tiling a k-px patch
    let pooled = fine.f_avg_pool2d([m, m], [1, 1], [0, 0], false, true, None::<i64>)?;
    let n = pooled.size()[2];
    let t_max = ((side - k) / q).min(n - 1); // last window whose patch lies inside the image
    let windows = pooled
        .f_narrow(2, 0, t_max + 1)?
        .f_narrow(3, 0, t_max + 1)?;
    // bilinear, corners aligned: grid cell i (pixel 4i) ↔ window i·t_max/(g−1) (= 4i/q exactly
    // when (S − k) is a multiple of q)
    let grid = windows.f_upsample_bilinear2d([g, g], true, None, None)?;
    // [1, C, g, g] -> [C, g²] -> [g², C]
    Ok(grid
        .f_reshape([c, g * g])?
        .f_transpose(0, 1)?
        .f_to_device(tch::Device::Cpu)?)
}

/// A `[rows, d]` CPU float tensor as an ndarray.
fn to_array(t: &Tensor, rows: usize) -> Result<Array2<f32>> {
    let t = t.f_to_kind(Kind::Float)?.f_contiguous()?;
    let n = t.numel();
    let mut v = vec![0f32; n];
    t.f_copy_data(&mut v, n)?;
    let d = n / rows.max(1);
    // [rows · d] -> [rows, d]
    Array2::from_shape_vec((rows, d), v)
        .map_err(|e| Error::internal(format!("shape of `features`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_sides_of_the_paper() {
        assert_eq!(grid_side(256, 32, 4), 57);
        assert_eq!(grid_side(256, 64, 4), 49);
        assert_eq!(grid_side(64, 32, 4), 9);
        assert_eq!(grid_side(32, 64, 4), 0);
    }
}
