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
}

impl FeatureMode {
    /// [`FeatureMode::Fast`] with 2 shifts per axis (4 whole-image passes).
    pub fn fast() -> Self {
        FeatureMode::Fast { shifts: 2 }
    }
}

/// The density over patch features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatchDensity {
    /// One Gaussian per grid cell (aligned objects: bottle, cable, capsule, …).
    PerLocation,
    /// One Gaussian shared by all cells (textures, hazelnut, screw).
    Shared,
}

/// Parameters of the patch localizer (PAPER.md "Localization"). [`LocalizerParams::paper`]
/// gives the paper's values where it states them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalizerParams {
    /// Side of the scored patches (paper A.5: 32; §4.2: 64).
    pub patch_size: u32,
    /// Grid stride in pixels (paper: 4).
    pub stride: u32,
    /// Side of the training crops (paper: 64).
    pub crop_size: u32,
    /// Exact or fast dense features.
    pub mode: FeatureMode,
    /// Per-location or shared Gaussian.
    pub density: PatchDensity,
    /// Dimensions of the shared PCA projection before the Gaussians **[our choice: 64]**.
    pub pca_dim: usize,
    /// Training images whose patch features fit the PCA basis **[our choice: 16]**.
    pub pca_images: usize,
    /// σ of the Gaussian upsampling kernel in pixels (FCDD's rule: 10 for kernels ≥ 32 px).
    pub sigma: f64,
    /// SGD steps of the patch model (paper: as many as the image model, 65,536).
    pub steps: usize,
    /// Source images (crops) per training step (paper: 32).
    pub batch_images: usize,
    /// Patches per forward pass in exact mode **[our choice: 256]**.
    pub feature_batch: usize,
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
            pca_dim: 64,
            pca_images: 16,
            sigma: 10.0,
            steps: 65_536,
            batch_images: 32,
            feature_batch: 256,
        }
    }
    setter!(
        /// Patch side (32 or 64 in the paper).
        patch_size: u32
    );
    setter!(
        /// Grid stride (paper: 4).
        stride: u32
    );
    setter!(
        /// Training crop side (paper: 64).
        crop_size: u32
    );
    setter!(
        /// Exact or fast features.
        mode: FeatureMode
    );
    setter!(
        /// Per-location or shared Gaussian.
        density: PatchDensity
    );
    setter!(
        /// PCA dimensions.
        pca_dim: usize
    );
    setter!(
        /// Images used to fit the PCA basis.
        pca_images: usize
    );
    setter!(
        /// σ of the upsampling kernel (pixels).
        sigma: f64
    );
    setter!(
        /// Training steps of the patch model.
        steps: usize
    );
    setter!(
        /// Crops per training step.
        batch_images: usize
    );
    setter!(
        /// Patches per forward pass (exact mode).
        feature_batch: usize
    );

    /// Validates the values alone and against the square input side `image_size` and the
    /// augmentation (which must fit in a crop). Errors name the field as `localizer.<field>`.
    pub fn check(&self, image_size: u32, augmentation: &Augmentation) -> Result<()> {
        let bad =
            |f: &str, reason: String| Err(Error::invalid_param(format!("localizer.{f}"), reason));
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
        if self.crop_size < self.patch_size || self.crop_size > image_size {
            return bad(
                "crop_size",
                format!(
                    "must be in patch_size..=image_size ({}..={image_size}; paper: 64), got {}",
                    self.patch_size, self.crop_size
                ),
            );
        }
        augmentation
            .check_image(self.crop_size, self.crop_size)
            .map_err(|e| {
                Error::invalid_param(
                    "localizer.crop_size",
                    format!("too small for the augmentation: {e}"),
                )
            })?;
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
