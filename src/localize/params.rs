//! [`LocalizerParams`]: every parameter of the patch localizer, with `check()`.
use crate::augment::Augmentation;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// How dense patch features are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeatureMode {
    /// Every patch of the grid is cut out and run through the backbone on its own (paper A.5):
    /// exact, but `grid²` small forward passes per image (3,249 for 32 px on 256²).
    Exact,
    /// **[our choice]** `shifts²` whole-image passes: the image shifted by multiples of
    /// `32 / shifts` px (reflection-padded at the far border) goes through the backbone once
    /// each; the `layer4` cells (stride 32, one per 32 px) of all shifts interleave into a map of
    /// stride `32 / shifts`. A patch of side `k` is the average of the cells tiling it (window of
    /// `(k − 32)·shifts/32 + 1` cells), and the grid at `stride` is bilinearly interpolated from
    /// those windows. Approximation: a cell sees context beyond its 32 px (its receptive field
    /// is larger), zero padding only at the true image border, and interpolation between window
    /// positions; the density is fitted on the same fast features, so fit and inference agree.
    Fast {
        /// Shifted passes per axis, one of 1, 2, 4, 8 (default 2: 4 passes, stride 16).
        shifts: u32,
    },
    /// **[our choice]** Exact patch features on a `factor`× coarser grid (stride
    /// `factor · stride`), bilinearly interpolated (corners aligned) onto the full grid:
    /// `factor²` times fewer patch passes (factor 4: 225 instead of 3,249 for 32 px on 256²).
    /// Approximation: features between coarse cells are interpolated, not computed.
    Subsampled {
        /// Coarsening of the grid, one of 2, 4, 8 (`(grid − 1)` must be a multiple of it).
        factor: u32,
    },
    /// **[our choice, the default of [`LocalizerParams::dense`]]** One whole-image pass per
    /// image at the working resolution (aspect kept): the `layer2` (stride 8) and `layer3`
    /// (stride 16, bilinearly upsampled) maps, each averaged over its 3 × 3 neighbourhood and
    /// concatenated, give a 384-d feature per 8 × 8-pixel cell (PAPER.md Table 3 scores
    /// intermediate levels the same way; PaDiM and PatchCore do too). `patch_size` and `stride`
    /// are not used: the grid is `⌈H/8⌉ × ⌈W/8⌉`. Cost: one partial forward pass per image.
    Dense,
}

impl FeatureMode {
    /// [`FeatureMode::Fast`] with 2 shifts per axis (4 whole-image passes).
    pub fn fast() -> Self {
        FeatureMode::Fast { shifts: 2 }
    }
}

/// Width of [`FeatureMode::Dense`] features: 128 (`layer2`) + 256 (`layer3`) channels.
pub const DENSE_WIDTH: usize = 384;

/// The density over patch features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatchDensity {
    /// One Gaussian per grid cell (aligned objects: bottle, cable, capsule, …).
    PerLocation,
    /// One Gaussian shared by all cells (textures, hazelnut, screw).
    Shared,
    /// **[our choice, the default of [`LocalizerParams::dense`]]** Resolved when fitting:
    /// [`Tied`](Self::Tied) on `pca_dim` PCA dimensions (128 in the dense recipe) when every
    /// training image has the same working size (grid cells line up), else
    /// [`Shared`](Self::Shared) over the full feature width. Chosen by measurement
    /// on the dev sets (docs/results.md, "density ablation", one trained model per set, image
    /// AUROC from the top-1 % mean): tied vs per-location (64 PCA dims) was 99.2 vs 44.3 on
    /// mpdd/metal_plate (49 images), 88.2 vs 83.7 (map max) on elpv/mono, 86.1 vs 91.8 on
    /// bsdata/ball_screw; per-location never wins by much and fails badly with few images.
    /// Tied on 64 / 128 / 256 / 384 PCA dimensions gave pixel AUROC 98.8 / 98.7 / 98.4 / 98.0 on
    /// bsdata and 96.8 / 97.5 / 97.6 / 97.6 on mpdd, image AUROC within 0.7 of each other on
    /// every set, so the dense recipe uses 128. A fitted localizer records the resolved kind.
    Auto,
    /// **[our choice]** One mean per grid cell and one covariance shared by all cells (fitted
    /// on the within-cell residuals), as in linear discriminant analysis: the mean of a cell
    /// needs far fewer images than its covariance, so this works with few training images and
    /// the full feature width (or `pca_dim` PCA dimensions), and stays aligned to the object.
    Tied,
    /// **[our choice]** [`Tied`](Self::Tied), with each cell's score divided by that cell's
    /// mean score over the training images (relative to the mean over all cells): one number
    /// per cell instead of a covariance, so parts of the object that vary more in normal images
    /// (edges, threads) do not outscore small defects on calm regions.
    TiedNormalized,
}

/// The covariance structure of the patch Gaussians, in their PCA space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PatchCovariance {
    /// The full (Ledoit–Wolf) covariance: the Mahalanobis distance (PAPER.md's GDE). The
    /// default of [`LocalizerParams::paper`], and of files written before this option.
    #[default]
    Full,
    /// **[our choice, the default of [`LocalizerParams::dense`]]** Only the covariance's
    /// diagonal (each PCA dimension's variance): a squared distance with every dimension
    /// scaled by its spread and correlations ignored. Measured against `Full` on the same
    /// trained dense models (docs/results.md, "patch covariance"), it localises better on every
    /// masked dev set, because the full inverse gives most weight to the low-variance
    /// directions of the within-cell residuals, which respond to noise more than to defects.
    Diagonal,
}

impl PatchDensity {
    /// The concrete density and PCA width for training images whose working sizes are
    /// `all_same` (one size) or not, and features `width` wide (see [`PatchDensity::Auto`]).
    pub fn resolve(self, all_same: bool, pca_dim: usize, width: usize) -> (PatchDensity, usize) {
        match self {
            PatchDensity::Auto if all_same => (PatchDensity::Tied, pca_dim.min(width)),
            PatchDensity::Auto => (PatchDensity::Shared, width),
            other => (other, pca_dim.min(width)),
        }
    }
}

/// Parameters of the patch localizer (PAPER.md "Localization"). [`LocalizerParams::paper`]
/// gives the paper's values where it states them, [`LocalizerParams::dense`] the CPU recipe.
///
/// One setter per field (`patch_size`, `stride`, …), each with a `get_` getter;
/// [`check`](Self::check) validates the values, and every function that takes them (the
/// detector's fit, [`Detector::refit_localizer`](crate::Detector::refit_localizer),
/// [`patch_features`](super::patch_features)) checks what it uses first.
///
/// ```
/// use cutpaste::localize::{FeatureMode, LocalizerParams};
/// let lp = LocalizerParams::paper().patch_size(64).mode(FeatureMode::fast());
/// assert_eq!((lp.get_patch_size(), lp.get_stride()), (64, 4));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalizerParams {
    /// Side of the scored patches (paper A.5: 32; §4.2: 64).
    pub(crate) patch_size: u32,
    /// Grid stride in pixels (paper: 4).
    pub(crate) stride: u32,
    /// Side of the training crops (paper: 64).
    pub(crate) crop_size: u32,
    /// Exact or fast dense features.
    pub(crate) mode: FeatureMode,
    /// Per-location or shared Gaussian.
    pub(crate) density: PatchDensity,
    /// Full or diagonal covariance of the Gaussians (files written before it: full).
    #[serde(default)]
    pub(crate) covariance: PatchCovariance,
    /// Dimensions of the shared PCA projection before the Gaussians **[our choice: 64]**.
    pub(crate) pca_dim: usize,
    /// Training images whose patch features fit the PCA basis **[our choice: 16]**.
    pub(crate) pca_images: usize,
    /// σ of the Gaussian upsampling kernel in pixels (FCDD's rule: 10 for kernels ≥ 32 px).
    pub(crate) sigma: f64,
    /// SGD steps of the patch model (paper: as many as the image model, 65,536).
    pub(crate) steps: usize,
    /// Source images (crops) per training step (paper: 32).
    pub(crate) batch_images: usize,
    /// Patches per forward pass in exact mode **[our choice: 256]**.
    pub(crate) feature_batch: usize,
    /// Working resolution of the localizer, independent of the image model's input side:
    /// images are resized so their **short side** is `resolution` (never enlarged; aspect kept,
    /// sides rounded to multiples of 8) in [`FeatureMode::Dense`], or to `resolution`² in the
    /// patch modes. 0 means the detector's input side (files written before this field).
    #[serde(default)]
    pub(crate) resolution: u32,
    /// **Set when fitting, not by the user:** the working size `(width, height)` of the
    /// training images when the density is per cell ([`PatchDensity::PerLocation`],
    /// [`Tied`](PatchDensity::Tied), [`TiedNormalized`](PatchDensity::TiedNormalized)). In
    /// [`FeatureMode::Dense`] every scored image is resized to it, so the grid cells line up
    /// with the training ones whatever the image's size (a camera's images normally all have
    /// the training size already). `None` in files written before this field.
    #[serde(default)]
    pub(crate) fitted_size: Option<(u32, u32)>,
}

impl Default for LocalizerParams {
    fn default() -> Self {
        Self::paper()
    }
}

impl LocalizerParams {
    /// Patch 32 at stride 4, 64² crops, exact features, per-location Gaussians, σ 10, 65,536
    /// steps of 32 crops.
    pub fn paper() -> Self {
        Self {
            patch_size: 32,
            stride: 4,
            crop_size: 64,
            mode: FeatureMode::Exact,
            density: PatchDensity::PerLocation,
            covariance: PatchCovariance::Full,
            pca_dim: 64,
            pca_images: 16,
            sigma: 10.0,
            steps: 65_536,
            batch_images: 32,
            feature_batch: 256,
            resolution: 0,
            fitted_size: None,
        }
    }

    /// **[our choice]** The dense recipe for a CPU budget: [`FeatureMode::Dense`] at a short side
    /// of 256, [`PatchDensity::Auto`] (tied Gaussians — a mean per cell, one covariance — on 128
    /// PCA dimensions for images of one size, else one shared Gaussian on the full 384-d
    /// features) with [diagonal](PatchCovariance::Diagonal) covariances, 64² training crops of
    /// the working-resolution images, σ = 4 for the 8-px cells.
    pub fn dense() -> Self {
        Self {
            mode: FeatureMode::Dense,
            density: PatchDensity::Auto,
            covariance: PatchCovariance::Diagonal,
            pca_dim: 128,
            sigma: 4.0,
            resolution: 256,
            ..Self::paper()
        }
    }

    /// The working size of a `w × h` image (see [`resolution`](Self::resolution) and
    /// [`get_fitted_size`](Self::get_fitted_size)); `side` is the detector's input side, used
    /// when `resolution` is 0.
    pub fn working_size(&self, w: u32, h: u32, side: u32) -> (u32, u32) {
        let r = if self.resolution == 0 {
            side
        } else {
            self.resolution
        };
        if self.mode != FeatureMode::Dense {
            return (r, r);
        }
        if let Some(size) = self.fitted_size {
            return size;
        }
        let short = w.min(h).max(1);
        let scale = (f64::from(r) / f64::from(short)).min(1.0);
        let round8 = |v: u32| (((f64::from(v) * scale) / 8.0).round() as u32 * 8).max(32);
        (round8(w), round8(h))
    }
    accessors!(
        /// Side of the scored patches in the patch modes (8 to the working side; paper A.5: 32,
        /// §4.2: 64); `working side − patch_size` must be a multiple of the stride.
        patch_size, get_patch_size: u32
    );
    accessors!(
        /// Grid stride in pixels in the patch modes (≥ 1; paper: 4).
        stride, get_stride: u32
    );
    accessors!(
        /// Side of the training crops of the patch model (paper: 64); the augmentation must fit
        /// in one.
        crop_size, get_crop_size: u32
    );
    accessors!(
        /// How dense patch features are computed (see [`FeatureMode`]).
        mode, get_mode: FeatureMode
    );
    accessors!(
        /// The density over patch features (see [`PatchDensity`]).
        density, get_density: PatchDensity
    );
    accessors!(
        /// Full or diagonal covariance of the patch Gaussians (see [`PatchCovariance`]).
        covariance, get_covariance: PatchCovariance
    );
    accessors!(
        /// Dimensions of the shared PCA projection before the Gaussians (1 to 512, at most 384
        /// in dense mode) **[our choice: 64; 128 in the dense recipe]**.
        pca_dim, get_pca_dim: usize
    );
    accessors!(
        /// Training images whose features fit the PCA basis (≥ 1) **[our choice: 16]**.
        pca_images, get_pca_images: usize
    );
    accessors!(
        /// σ of the Gaussian upsampling kernel in pixels (> 0; FCDD's rule: 10 for kernels
        /// ≥ 32 px; 4 in the dense recipe).
        sigma, get_sigma: f64
    );
    accessors!(
        /// SGD steps of the patch model (≥ 1; paper: as many as the image model, 65,536).
        steps, get_steps: usize
    );
    accessors!(
        /// Source images (crops) per training step of the patch model (≥ 1; paper: 32).
        batch_images, get_batch_images: usize
    );
    accessors!(
        /// Patches per forward pass in the exact and subsampled modes (≥ 1) **[our choice:
        /// 256]**.
        feature_batch, get_feature_batch: usize
    );
    accessors!(
        /// Working resolution of the localizer, independent of the image model's input side
        /// (0, or ≥ 32): images are resized so their **short side** is `resolution` (never
        /// enlarged; aspect kept, sides rounded to multiples of 8) in [`FeatureMode::Dense`], or
        /// to `resolution`² in the patch modes. 0 means the detector's input side (and is what
        /// files written before this parameter existed hold).
        resolution, get_resolution: u32
    );

    /// **Set when fitting, not by the user (so it has no setter):** the working size
    /// `(width, height)` of the training images when the density is per cell
    /// ([`PatchDensity::PerLocation`], [`Tied`](PatchDensity::Tied),
    /// [`TiedNormalized`](PatchDensity::TiedNormalized)). In [`FeatureMode::Dense`] every scored
    /// image is resized to it, so the grid cells line up with the training ones whatever the
    /// image's size. `None` before a fit, for other densities, and in files written before it
    /// was recorded.
    pub fn get_fitted_size(&self) -> Option<(u32, u32)> {
        self.fitted_size
    }

    /// Validates the values alone and against the square input side `image_size` and the
    /// augmentation (which must fit in a crop). Errors name the field as `localizer.<field>`.
    pub fn check(&self, image_size: u32, augmentation: &Augmentation) -> Result<()> {
        let bad =
            |f: &str, reason: String| Err(Error::invalid_param(format!("localizer.{f}"), reason));
        if self.resolution != 0 && self.resolution < 32 {
            return bad(
                "resolution",
                format!(
                    "must be 0 (the input side) or >= 32 (default 256), got {}",
                    self.resolution
                ),
            );
        }
        let image_size = if self.resolution == 0 {
            image_size
        } else {
            self.resolution
        };
        if self.mode == FeatureMode::Dense {
            return self.check_dense(image_size, augmentation);
        }
        self.check_features(image_size)?;
        if self.crop_size < self.patch_size || self.crop_size > image_size {
            return bad(
                "crop_size",
                format!(
                    "must be in patch_size..=image_size ({}..={image_size}; paper: 64), got {}",
                    self.patch_size, self.crop_size
                ),
            );
        }
        self.check_crop_fits(augmentation)?;
        self.check_common()
    }

    /// Validates what dense patch features ([`patch_features`](super::patch_features)) use, for
    /// a square image of side `side`: a patch mode (not [`FeatureMode::Dense`]), the stride, the
    /// patch size and the grid it gives, the mode's factor or shifts, the feature batch. Errors
    /// name the field as `localizer.<field>`.
    pub(crate) fn check_features(&self, side: u32) -> Result<()> {
        let bad =
            |f: &str, reason: String| Err(Error::invalid_param(format!("localizer.{f}"), reason));
        let image_size = side;
        if self.mode == FeatureMode::Dense {
            return bad(
                "mode",
                "dense features have their own grid: use localize::dense_features".into(),
            );
        }
        if self.stride == 0 {
            return bad("stride", "must be >= 1 (paper: 4)".into());
        }
        if self.patch_size < 8 || self.patch_size > image_size {
            return bad(
                "patch_size",
                format!(
                    "must be in 8..={image_size} (the input side; paper: 32 or 64), got {}",
                    self.patch_size
                ),
            );
        }
        if !(image_size - self.patch_size).is_multiple_of(self.stride) {
            return bad(
                "patch_size",
                format!(
                    "image_size − patch_size = {} must be a multiple of the stride {} so the grid \
                     tiles the image (e.g. 256, 32, 4)",
                    image_size - self.patch_size,
                    self.stride
                ),
            );
        }
        if let FeatureMode::Fast { shifts } = self.mode {
            if ![1, 2, 4, 8].contains(&shifts) {
                return bad(
                    "mode",
                    format!("fast shifts must be 1, 2, 4 or 8, got {shifts}"),
                );
            }
            if image_size < 32 || self.patch_size < 32 {
                return bad(
                    "mode",
                    "fast mode needs patch_size and image_size >= 32 (one layer4 cell); use FeatureMode::Exact".into(),
                );
            }
        }
        if let FeatureMode::Subsampled { factor } = self.mode {
            let cells = (image_size - self.patch_size) / self.stride;
            if ![2, 4, 8].contains(&factor) || !cells.is_multiple_of(factor) {
                return bad(
                    "mode",
                    format!(
                        "subsampling factor must be 2, 4 or 8 and divide (image_size − patch_size) / stride = {cells}, got {factor}"
                    ),
                );
            }
        }
        if self.feature_batch == 0 {
            return bad("feature_batch", "must be >= 1 (default 256)".into());
        }
        Ok(())
    }

    /// [`FeatureMode::Dense`]: crops fit the working side and the augmentation; common fields.
    fn check_dense(&self, side: u32, augmentation: &Augmentation) -> Result<()> {
        if self.crop_size < 32 || self.crop_size > side {
            return Err(Error::invalid_param(
                "localizer.crop_size",
                format!(
                    "must be in 32..={side} (the working side; default 64), got {}",
                    self.crop_size
                ),
            ));
        }
        self.check_crop_fits(augmentation)?;
        if self.pca_dim > DENSE_WIDTH {
            return Err(Error::invalid_param(
                "localizer.pca_dim",
                format!("dense features have {DENSE_WIDTH} dims; pca_dim must be in 1..={DENSE_WIDTH}, got {}", self.pca_dim),
            ));
        }
        self.check_common()
    }

    /// The augmentation must fit in a training crop.
    fn check_crop_fits(&self, augmentation: &Augmentation) -> Result<()> {
        augmentation
            .check_image(self.crop_size, self.crop_size)
            .map_err(|e| {
                Error::invalid_param(
                    "localizer.crop_size",
                    format!("too small for the augmentation: {e}"),
                )
            })
    }

    fn check_common(&self) -> Result<()> {
        let bad =
            |f: &str, reason: String| Err(Error::invalid_param(format!("localizer.{f}"), reason));
        if self.pca_dim == 0 || self.pca_dim > 512 {
            return bad(
                "pca_dim",
                format!("must be in 1..=512 (default 64), got {}", self.pca_dim),
            );
        }
        if self.pca_images == 0 {
            return bad("pca_images", "must be >= 1 (default 16)".into());
        }
        if !(self.sigma.is_finite() && self.sigma > 0.0) {
            return bad(
                "sigma",
                format!("must be > 0 (default 10), got {}", self.sigma),
            );
        }
        if self.steps == 0 {
            return bad("steps", "must be >= 1 (paper: 65536)".into());
        }
        if self.batch_images == 0 {
            return bad("batch_images", "must be >= 1 (paper: 32)".into());
        }
        if self.feature_batch == 0 {
            return bad("feature_batch", "must be >= 1 (default 256)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_density_is_tied_for_one_size_and_shared_otherwise() {
        let auto = PatchDensity::Auto;
        assert_eq!(auto.resolve(true, 128, 384), (PatchDensity::Tied, 128));
        assert_eq!(auto.resolve(true, 1000, 384), (PatchDensity::Tied, 384));
        assert_eq!(auto.resolve(false, 64, 384), (PatchDensity::Shared, 384));
        // explicit choices keep the requested PCA width, capped at the feature width
        assert_eq!(
            PatchDensity::PerLocation.resolve(true, 64, 384),
            (PatchDensity::PerLocation, 64)
        );
        assert_eq!(
            PatchDensity::Shared.resolve(true, 1000, 384),
            (PatchDensity::Shared, 384)
        );
    }

    #[test]
    fn dense_working_size_keeps_the_aspect_and_never_enlarges() {
        let lp = LocalizerParams::dense();
        assert_eq!(lp.working_size(512, 208, 64), (512, 208));
        assert_eq!(lp.working_size(900, 900, 64), (256, 256));
        assert_eq!(lp.working_size(1024, 512, 64), (512, 256));
        // patch modes work on squares; resolution 0 means the detector's side
        let paper = LocalizerParams::paper();
        assert_eq!(paper.working_size(512, 208, 64), (64, 64));
        assert_eq!(paper.resolution(256).working_size(512, 208, 64), (256, 256));
    }
}
