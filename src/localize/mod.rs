//! Patch-level localization (PAPER.md "Localization"; CutPaste §4.2 and Appendix A.5).
//!
//! 1. **Patch model** ([`PatchSource`]): the same classifier as the image model, trained on random
//!    `crop_size`² crops (paper: 64) of the resized training images, with the configured
//!    augmentation (3-way CutPaste / Scar) applied *inside* the crop.
//! 2. **Dense patch features** ([`FeatureMode`]): a grid of `patch_size`² patches at `stride`
//!    (paper A.5: 32 px at stride 4 → 57 × 57 on 256²; §4.2: 64 px → 49 × 49), one pooled
//!    512-d feature each. [`FeatureMode::Exact`] unfolds the patches and runs each through the
//!    backbone; [`FeatureMode::Subsampled`] computes exact features on a 2/4/8× coarser grid
//!    and interpolates them; [`FeatureMode::Fast`] approximates the grid from a few whole-image
//!    passes (see each variant's docs for the approximation). On MVTec bottle (reduced budget,
//!    see `examples/localize.rs`) `Subsampled { factor: 4 }` matched exact pixel AUROC at
//!    ~1/45 of its time, while `Fast` lost ~7 points.
//! 3. **Patch density** ([`PatchDensity`]): L2-normalised features are projected onto a shared
//!    PCA basis of `pca_dim` dimensions **[our choice: keeps a fitted localizer small]**, then
//!    one Ledoit–Wolf Gaussian per grid cell (aligned objects) or one shared Gaussian
//!    (textures). Patch score = squared Mahalanobis distance, higher = more anomalous; with a
//!    [diagonal](PatchCovariance::Diagonal) covariance (the dense recipe's) each dimension is
//!    scaled by its variance alone.
//! 4. **Score map → pixels** ([`upsample_scores`]): receptive-field upsampling, a transposed
//!    convolution with stride `stride` and one `patch_size`² Gaussian kernel (σ = `sigma`;
//!    default 10, FCDD's rule for kernels ≥ 32 px **[our choice]**), back to the input side,
//!    then resized to the caller's image size. The patch model's image score is the map's max.
//!
//! Enable it with [`DetectorParams::localizer`](crate::DetectorParams::localizer); the fitted
//! [`Detector::localize`](crate::Detector::localize) returns an [`AnomalyMap`](crate::heatmap::AnomalyMap).
//!
//! ```no_run
//! use cutpaste::prelude::*;
//! use cutpaste::localize::{FeatureMode, LocalizerParams};
//! let train = Dataset::mvtec("mvtec/bottle")?;
//! let detector = Detector::params()
//!     .training(TrainParams::paper().steps(2_000))
//!     .localizer(LocalizerParams::paper().patch_size(32).mode(FeatureMode::fast()).steps(2_000))
//!     .fit(&train)?;
//! let image = cutpaste::data::load_rgb("mvtec/bottle/test/broken_large/000.png")?;
//! let map = detector.localize(&image)?; // same size as `image`, higher = more anomalous
//! let (peak, (x, y)) = map.max();
//! # let _ = (peak, x, y); Ok::<(), cutpaste::Error>(())
//! ```
mod dense;
mod features;
mod fit;
mod fitted;
mod gaussians;
mod params;
mod source;
mod upsample;

pub use dense::{dense_features, dense_grid, DENSE_STRIDE};
pub use features::{grid_side, patch_features};
pub(crate) use fitted::SharedLocalizer;
pub use fitted::{prepare_image, top_mean, Localizer, TOP_FRACTION};
pub use gaussians::PatchGaussians;
pub use params::{FeatureMode, LocalizerParams, PatchCovariance, PatchDensity, DENSE_WIDTH};
pub use source::PatchSource;
pub use upsample::{gaussian_kernel, resize_bilinear, upsample_dense, upsample_scores};
