//! Fitting the patch density of a [`Localizer`](super::Localizer): which density (resolving
//! [`PatchDensity::Auto`]), the PCA basis, and the Gaussians over every training image's cells.
use super::dense::dense_features;
use super::features::patch_features;
use super::fitted::grid_dims;
use super::gaussians::{PatchGaussians, SHARED_ROWS};
use super::params::{FeatureMode, LocalizerParams, PatchDensity, DENSE_WIDTH};
use crate::data::Normalization;
use crate::error::{Error, Result};
use crate::linalg::l2_normalize_rows;
use crate::model::{Classifier, Control};
use crate::pipeline::FitEvent;
use image::RgbImage;
use ndarray::{concatenate, s, Array1, Array2, Array3, Axis};

/// Images scored together in one dense pass.
pub(crate) const DENSE_BATCH: usize = 8;

/// `[cells, width]` raw features of each working-size image.
pub(crate) fn features_of(
    clf: &Classifier,
    norm: &Normalization,
    lp: &LocalizerParams,
    images: &[RgbImage],
) -> Result<Vec<Array2<f32>>> {
    match lp.mode {
        FeatureMode::Dense => dense_features(clf, norm, images, DENSE_BATCH),
        _ => images
            .iter()
            .map(|i| patch_features(clf, norm, i, lp))
            .collect(),
    }
}

/// `lp` with its density resolved for `images` (see [`PatchDensity::resolve`]) and the PCA
/// width that goes with it; errors when per-location Gaussians meet images of several sizes.
fn resolve(lp: &LocalizerParams, images: &[RgbImage]) -> Result<LocalizerParams> {
    let first = grid_dims(lp, &images[0]);
    let all_same = images.iter().all(|i| grid_dims(lp, i) == first);
    let width = match lp.mode {
        FeatureMode::Dense => DENSE_WIDTH,
        _ => 512,
    };
    let (density, d) = lp.density.resolve(all_same, lp.pca_dim, width);
    let per_cell = matches!(
        density,
        PatchDensity::PerLocation | PatchDensity::Tied | PatchDensity::TiedNormalized
    );
    if per_cell && !all_same {
        return Err(Error::invalid_param(
            "localizer.density",
            "per-location and tied Gaussians need one grid, but the training images have different \
             sizes at the working resolution; use PatchDensity::Shared or Auto",
        ));
    }
    Ok(lp.clone().density(density).pca_dim(d))
}

/// The PCA basis (`lp.pca_dim` components) of the L2-normalised cells of `pca_images` evenly
/// spaced images.
fn fit_basis(
    clf: &Classifier,
    norm: &Normalization,
    lp: &LocalizerParams,
    images: &[RgbImage],
) -> Result<(Array1<f32>, Array2<f32>)> {
    let n = images.len();
    let picks = lp.pca_images.min(n);
    let chosen: Vec<RgbImage> = (0..picks).map(|p| images[p * n / picks].clone()).collect();
    let mut rows = features_of(clf, norm, lp, &chosen)?;
    rows.iter_mut().for_each(l2_normalize_rows);
    let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
    let all = concatenate(Axis(0), &views)
        .map_err(|e| Error::internal(format!("shape of `features`: {e}")))?;
    PatchGaussians::fit_pca(all.view(), lp.pca_dim)
}

/// PCA on the cells of `pca_images` evenly spaced images, then the Gaussians on all images
/// (all at the working size). A shared Gaussian keeps an even subsample of at most
/// [`SHARED_ROWS`] cells, so images may differ in size; per-location Gaussians need one grid.
pub(crate) fn fit_gaussians(
    clf: &Classifier,
    norm: &Normalization,
    lp: &LocalizerParams,
    images: &[RgbImage],
    callback: &mut dyn FnMut(&FitEvent) -> Control,
) -> Result<PatchGaussians> {
    let lp = &resolve(lp, images)?;
    let (mean, proj) = fit_basis(clf, norm, lp, images)?;
    let z = project_all(clf, norm, lp, images, (&mean, &proj), callback)?;
    PatchGaussians::fit(lp.density, lp.covariance, mean, proj, z.view())
}

/// Projected cells of every image: `[n, cells, d]` for per-location Gaussians, `[1, m, d]`
/// (an even subsample of all cells, m ≤ [`SHARED_ROWS`]) for a shared one.
fn project_all(
    clf: &Classifier,
    norm: &Normalization,
    lp: &LocalizerParams,
    images: &[RgbImage],
    (mean, proj): (&Array1<f32>, &Array2<f32>),
    callback: &mut dyn FnMut(&FitEvent) -> Control,
) -> Result<Array3<f32>> {
    let n = images.len();
    let (rows, cols) = grid_dims(lp, &images[0]);
    let (cells, d) = (rows * cols, proj.ncols());
    let shared = matches!(lp.density, PatchDensity::Shared | PatchDensity::Auto);
    // shared: keep every `step`-th cell of the concatenation (at most SHARED_ROWS rows)
    let step = if shared {
        (n * cells).div_ceil(SHARED_ROWS).max(1)
    } else {
        1
    };
    let mut kept: Vec<Array2<f32>> = Vec::new();
    let mut z = Array3::<f32>::zeros((if shared { 0 } else { n }, cells, d));
    let mut offset = 0usize; // running index of the first cell of the next image
    for (i, chunk) in images.chunks(DENSE_BATCH).enumerate() {
        for (k, raw) in features_of(clf, norm, lp, chunk)?.into_iter().enumerate() {
            let projected = PatchGaussians::project_with(mean, proj, &raw);
            if shared {
                let first = ((step - offset % step) % step).min(projected.nrows());
                offset += projected.nrows();
                kept.push(projected.slice(s![first..;step, ..]).to_owned());
            } else {
                z.index_axis_mut(Axis(0), i * DENSE_BATCH + k)
                    .assign(&projected);
            }
        }
        let done = (i * DENSE_BATCH + chunk.len()).min(n);
        if callback(&FitEvent::LocalizerFeatures { done, total: n }) == Control::Stop {
            return Err(Error::Stopped {
                stage: "localizer feature extraction".into(),
                step: done,
            });
        }
    }
    if !shared {
        return Ok(z);
    }
    let views: Vec<_> = kept.iter().map(|r| r.view()).collect();
    let rows = concatenate(Axis(0), &views)
        .map_err(|e| Error::internal(format!("shape of `features`: {e}")))?;
    let m = rows.nrows();
    // [m, d] -> [1, m, d]: one "image" whose cells are every kept cell
    rows.into_shape_with_order((1, m, d))
        .map_err(|e| Error::internal(format!("shape of `features`: {e}")))
}
