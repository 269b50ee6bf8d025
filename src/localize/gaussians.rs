//! Patch densities (PAPER.md "Localization": per-location GDE for aligned objects, one shared
//! Gaussian for textures) in a compact form: L2-normalised 512-d patch features are projected
//! onto a shared PCA basis of `d` dimensions **[our choice]**, then one Ledoit–Wolf Gaussian per
//! grid cell (or one for all cells) is fitted in that space and stored as mean + precision
//! matrix in f32. For 57 × 57 cells and d = 64 that is 3,249 · (64 + 64²) · 4 B ≈ 54 MB, where
//! full 512-d covariances would take 3,249 · 512² · 4 B ≈ 3.4 GB.
use super::params::{PatchCovariance, PatchDensity};
use crate::density::{ledoit_wolf, ArrayData, NamedArray};
use crate::error::{Error, Result};
use crate::linalg::{l2_normalize_rows, precision_matrix, principal_axes};
use ndarray::{s, Array1, Array2, Array3, ArrayView2, ArrayView3, Axis};

/// Added to every covariance's diagonal so a cell seen by few images stays invertible
/// (scikit-learn's `reg_covar` default) **[our choice]**.
pub const REG_COVAR: f64 = 1e-6;
/// At most this many rows fit the shared Gaussian (an even subsample of all cells).
pub(crate) const SHARED_ROWS: usize = 100_000;
/// Pseudo-images at the all-cell mean that shrink each cell's divisor in
/// [`PatchDensity::TiedNormalized`], so a cell seen by few images stays near 1 **[our choice]**.
pub const SCALE_PRIOR: f64 = 4.0;

/// Fitted patch Gaussians: PCA basis + per-cell (or shared) means and precision matrices.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchGaussians {
    kind: PatchDensity,
    /// `[512]` centre of the PCA.
    pca_mean: Array1<f32>,
    /// `[512, d]` orthonormal basis, leading components first.
    projection: Array2<f32>,
    /// `[G, d]` means (G = cells, or 1 when shared).
    means: Array2<f32>,
    /// `[G, d, d]` inverse covariances.
    precisions: Array3<f32>,
    /// `[cells]` per-cell score divisors ([`PatchDensity::TiedNormalized`] only).
    scales: Option<Array1<f32>>,
}

impl PatchGaussians {
    /// Bytes of the arrays a fitted value holds for `groups` Gaussians (cells, or 1 when
    /// shared), feature width `width` (512) and `d` PCA dimensions.
    pub fn estimate_bytes(groups: usize, width: usize, d: usize) -> usize {
        4 * (width + width * d + groups * d + groups * d * d)
    }

    /// Bytes actually held by its arrays.
    pub fn memory_bytes(&self) -> usize {
        let scales = self.scales.as_ref().map_or(0, |s| s.len());
        4 * (self.pca_mean.len()
            + self.projection.len()
            + self.means.len()
            + self.precisions.len()
            + scales)
    }

    /// Fits the PCA basis (`d` leading components) on L2-normalised `[n, 512]` rows.
    pub(crate) fn fit_pca(rows: ArrayView2<f32>, d: usize) -> Result<(Array1<f32>, Array2<f32>)> {
        let (n, width) = rows.dim();
        if n < 2 || d > width {
            return Err(Error::invalid_param(
                "localizer.pca_dim",
                format!(
                    "PCA needs >= 2 patch features and pca_dim <= {width}, got {n} rows, {d} dims"
                ),
            ));
        }
        let (mean, axes) = principal_axes(rows.mapv(f64::from).view(), d)?;
        let proj = axes.mapv(|v| v as f32);
        Ok((mean.mapv(|v| v as f32), proj))
    }

    /// Projects `[cells, 512]` raw features (L2-normalised here) to `[cells, d]`.
    pub(crate) fn project_with(
        mean: &Array1<f32>,
        proj: &Array2<f32>,
        raw: &Array2<f32>,
    ) -> Array2<f32> {
        let mut x = raw.clone();
        l2_normalize_rows(&mut x);
        x -= mean;
        x.dot(proj)
    }

    /// Projects `[cells, 512]` raw features to `[cells, d]`.
    pub fn project(&self, raw: &Array2<f32>) -> Array2<f32> {
        Self::project_with(&self.pca_mean, &self.projection, raw)
    }

    /// Fits the Gaussians on projected features `[n_images, cells, d]`.
    pub(crate) fn fit(
        kind: PatchDensity,
        cov: PatchCovariance,
        pca_mean: Array1<f32>,
        projection: Array2<f32>,
        z: ArrayView3<f32>,
    ) -> Result<Self> {
        match kind {
            PatchDensity::Tied => return Self::fit_tied(cov, pca_mean, projection, z),
            PatchDensity::TiedNormalized => {
                return Self::fit_tied(cov, pca_mean, projection, z)?.normalized(z)
            }
            _ => {}
        }
        let (n, cells, d) = z.dim();
        let groups = match kind {
            PatchDensity::PerLocation => cells,
            // Auto is resolved before fitting (PatchDensity::resolve); alone it means shared
            _ => 1,
        };
        let mut means = Array2::zeros((groups, d));
        let mut precisions = Array3::zeros((groups, d, d));
        for g in 0..groups {
            let x: Array2<f64> = match kind {
                PatchDensity::PerLocation => z.slice(s![.., g, ..]).mapv(f64::from),
                _ => {
                    // [n, cells, d] -> [n·cells, d], evenly subsampled
                    let all = z
                        .to_shape((n * cells, d))
                        .map_err(|e| Error::internal(format!("shape of `features`: {e}")))?;
                    let step = (n * cells).div_ceil(SHARED_ROWS).max(1);
                    all.slice(s![..;step, ..]).mapv(f64::from)
                }
            };
            let (mean, prec) = gaussian(x, cov)?;
            means.row_mut(g).assign(&mean.mapv(|v| v as f32));
            precisions
                .slice_mut(s![g, .., ..])
                .assign(&prec.mapv(|v| v as f32));
        }
        Ok(Self {
            kind,
            pca_mean,
            projection,
            means,
            precisions,
            scales: None,
        })
    }

    /// [`PatchDensity::TiedNormalized`] from a fitted tied density and its training features
    /// `[n, cells, d]`: cell `c`'s divisor is its mean squared distance over the `n` images,
    /// shrunk toward the mean over all cells as if [`SCALE_PRIOR`] more images had scored that
    /// mean, then divided by the all-cell mean (so divisors average ≈ 1 and scores keep their
    /// tied magnitude).
    fn normalized(mut self, z: ArrayView3<f32>) -> Result<Self> {
        let (n, cells, _) = z.dim();
        let p = self.precisions.index_axis(Axis(0), 0);
        let mut sums = Array1::<f64>::zeros(cells);
        for image in z.outer_iter() {
            // [cells, d] residuals from each cell's mean
            let diff = &image - &self.means;
            let m = (&diff.dot(&p) * &diff).sum_axis(Axis(1));
            sums.zip_mut_with(&m, |a, &b| *a += f64::from(b));
        }
        let overall = sums.sum() / (n * cells).max(1) as f64;
        if !(overall.is_finite() && overall > 0.0) {
            return Err(Error::invalid_input(
                "features",
                "the training images' patch features do not vary: cannot normalise the cells",
            ));
        }
        let k = SCALE_PRIOR;
        self.scales =
            Some(sums.mapv(|sum| ((sum + k * overall) / (n as f64 + k) / overall) as f32));
        self.kind = PatchDensity::TiedNormalized;
        Ok(self)
    }

    /// [`PatchDensity::Tied`]: the mean of each cell over the `n` images, and one Ledoit–Wolf
    /// covariance of the within-cell residuals of all cells (an even subsample of at most
    /// [`SHARED_ROWS`]), as in linear discriminant analysis.
    fn fit_tied(
        cov: PatchCovariance,
        pca_mean: Array1<f32>,
        projection: Array2<f32>,
        z: ArrayView3<f32>,
    ) -> Result<Self> {
        let (n, cells, d) = z.dim();
        let means = z
            .mean_axis(Axis(0))
            .ok_or_else(|| Error::invalid_input("train", "no training images were given"))?;
        let step = (n * cells).div_ceil(SHARED_ROWS).max(1);
        // residuals of every `step`-th (image, cell) pair, [m, d]
        let rows: Vec<f64> = (0..n * cells)
            .step_by(step)
            .flat_map(|k| {
                let (i, c) = (k / cells, k % cells);
                let (z, means) = (&z, &means);
                (0..d).map(move |j| f64::from(z[[i, c, j]] - means[[c, j]]))
            })
            .collect();
        let m = rows.len() / d.max(1);
        // [m · d] -> [m, d]
        let x = Array2::from_shape_vec((m, d), rows)
            .map_err(|e| Error::internal(format!("shape of `features`: {e}")))?;
        let (_, prec) = gaussian(x, cov)?;
        let precisions = prec
            .mapv(|v| v as f32)
            .into_shape_with_order((1, d, d))
            .map_err(|e| Error::internal(format!("shape of `features`: {e}")))?;
        Ok(Self {
            kind: PatchDensity::Tied,
            pca_mean,
            projection,
            means,
            precisions,
            scales: None,
        })
    }

    /// Squared Mahalanobis distance of every cell, `[cells, 512]` raw features → `[cells]`
    /// (higher = more anomalous).
    pub fn score(&self, raw: &Array2<f32>) -> Result<Array1<f32>> {
        let z = self.project(raw);
        let groups = self.means.nrows();
        if groups > 1 && z.nrows() != groups {
            return Err(Error::DimensionMismatch {
                what: "patch grid cells".into(),
                expected: groups,
                got: z.nrows(),
            });
        }
        if self.precisions.len_of(Axis(0)) == 1 {
            // one covariance (shared or tied): all cells in one matrix product,
            // Σ_k (D·P)[c, k] · D[c, k] with D = z − mean (one mean, or each cell's)
            let diff = if groups == 1 {
                &z - &self.means.row(0)
            } else {
                &z - &self.means
            };
            let p = self.precisions.index_axis(Axis(0), 0);
            let m = (&diff.dot(&p) * &diff).sum_axis(Axis(1));
            return Ok(match &self.scales {
                Some(scales) => m / scales,
                None => m,
            });
        }
        let mut out = Array1::zeros(z.nrows());
        for (c, row) in z.outer_iter().enumerate() {
            let g = if groups == 1 { 0 } else { c };
            let diff = &row - &self.means.row(g);
            let p = self.precisions.slice(s![g, .., ..]);
            out[c] = diff.dot(&p.dot(&diff));
        }
        Ok(out)
    }

    /// Per-location or shared.
    pub fn kind(&self) -> PatchDensity {
        self.kind
    }

    /// PCA dimensions.
    pub fn dim(&self) -> usize {
        self.projection.ncols()
    }

    /// The arrays, for checkpoints: `pca_mean`, `projection`, `means`, `precisions` (f32).
    pub fn to_arrays(&self) -> Vec<NamedArray> {
        let arr = |name: &str, shape: &[usize], data: Vec<f32>| NamedArray {
            name: name.into(),
            shape: shape.to_vec(),
            data: ArrayData::F32(data),
        };
        vec![
            arr(
                "pca_mean",
                self.pca_mean.shape(),
                self.pca_mean.iter().copied().collect(),
            ),
            arr(
                "projection",
                self.projection.shape(),
                self.projection.iter().copied().collect(),
            ),
            arr(
                "means",
                self.means.shape(),
                self.means.iter().copied().collect(),
            ),
            arr(
                "precisions",
                self.precisions.shape(),
                self.precisions.iter().copied().collect(),
            ),
        ]
        .into_iter()
        .chain(
            self.scales
                .as_ref()
                .map(|s| arr("cell_scales", s.shape(), s.to_vec())),
        )
        .collect()
    }

    /// Rebuilds from [`to_arrays`](Self::to_arrays)'s output; errors name the missing or
    /// mis-shaped array.
    pub fn from_arrays(kind: PatchDensity, arrays: &[NamedArray]) -> Result<Self> {
        let get = |name: &str, rank: usize| -> Result<(Vec<usize>, Vec<f32>)> {
            let a = arrays.iter().find(|a| a.name == name).ok_or_else(|| {
                Error::invalid_input("localizer", format!("array `{name}` is missing"))
            })?;
            match &a.data {
                ArrayData::F32(v)
                    if a.shape.len() == rank && a.shape.iter().product::<usize>() == v.len() =>
                {
                    Ok((a.shape.clone(), v.clone()))
                }
                _ => Err(Error::invalid_input(
                    "localizer",
                    format!("array `{name}` has the wrong shape or dtype"),
                )),
            }
        };
        let bad = |e: ndarray::ShapeError| Error::invalid_input("localizer", e.to_string());
        let (s0, v0) = get("pca_mean", 1)?;
        let (s1, v1) = get("projection", 2)?;
        let (s2, v2) = get("means", 2)?;
        let (s3, v3) = get("precisions", 3)?;
        let d = s1[1];
        let tied = matches!(kind, PatchDensity::Tied | PatchDensity::TiedNormalized);
        let groups_ok = s3[0] == s2[0] || (tied && s3[0] == 1);
        let scales = match kind {
            PatchDensity::TiedNormalized => {
                let (s4, v4) = get("cell_scales", 1)?;
                if s4[0] != s2[0] {
                    return Err(Error::invalid_input(
                        "localizer",
                        "`cell_scales` does not have one value per cell",
                    ));
                }
                Some(Array1::from_vec(v4))
            }
            _ => None,
        };
        if s1[0] != s0[0] || s2[1] != d || !groups_ok || s3[1] != d || s3[2] != d {
            return Err(Error::invalid_input(
                "localizer",
                "PCA / Gaussian array shapes disagree",
            ));
        }
        Ok(Self {
            kind,
            pca_mean: Array1::from_vec(v0),
            projection: Array2::from_shape_vec((s1[0], d), v1).map_err(bad)?,
            means: Array2::from_shape_vec((s2[0], d), v2).map_err(bad)?,
            precisions: Array3::from_shape_vec((s3[0], d, d), v3).map_err(bad)?,
            scales,
        })
    }
}

/// Mean and inverse Ledoit–Wolf covariance (+ [`REG_COVAR`]·I) of rows `x` (n × d): the
/// covariance estimator and the checked Cholesky factorisation that the image-level
/// [`FittedGaussian`](crate::density::FittedGaussian) uses, inverted once here
/// ([`precision_matrix`]). Only the stored form differs: thousands of cells keep `Σ⁻¹` in f32 (a
/// quarter of `Σ` and its factor in f64), and score with matrix products, all cells at once when
/// they share one covariance. Not ndarray-linalg's `invh`: for a row-major matrix (as the
/// covariance is) it returns the input's off-diagonal entries with the inverse's diagonal.
/// With [`PatchCovariance::Diagonal`] the precision is `diag(1 / Σ_ii)` of the same `Σ`.
fn gaussian(mut x: Array2<f64>, kind: PatchCovariance) -> Result<(Array1<f64>, Array2<f64>)> {
    let (n, d) = x.dim();
    let mean = x.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(d));
    x -= &mean;
    let (mut cov, _) = ledoit_wolf(x.view());
    for i in 0..d {
        cov[[i, i]] += REG_COVAR;
    }
    match kind {
        PatchCovariance::Full => Ok((mean, precision_matrix(&cov, n)?)),
        // Σ_ii ≥ REG_COVAR > 0: always invertible
        PatchCovariance::Diagonal => Ok((mean, Array2::from_diag(&cov.diag().mapv(|v| 1.0 / v)))),
    }
}

#[cfg(test)]
mod tests;
