//! The typed builder: [`DetectorParams`] (paper defaults) → [`check`](DetectorParams::check) →
//! [`ValidDetectorParams`] → [`fit`](ValidDetectorParams::fit) → a fitted [`Detector`].
//! Unfitted parameters and the fitted detector are different types, so scoring before fitting
//! cannot compile. [`DetectorParams::fit`] is the shortcut: it checks, then fits.
//!
//! ```no_run
//! use cutpaste::prelude::*;
//! let train = Dataset::mvtec("mvtec/bottle")?;
//! let detector = Detector::params()
//!     .augmentation(Augmentation::three_way())
//!     .training(TrainParams::paper().steps(2_000))
//!     .density(Density::gaussian())
//!     .seed(0)
//!     .fit(&train)?;
//! let image = cutpaste::data::load_rgb("mvtec/bottle/test/broken_large/000.png")?;
//! let score = detector.score(&image)?; // higher = more anomalous
//! # Ok::<(), cutpaste::Error>(())
//! ```
//!
//! Checking once and fitting several times (the check runs once, not per fit):
//! ```no_run
//! use cutpaste::prelude::*;
//! let params = Detector::params().training(TrainParams::paper().steps(500)).check()?;
//! for name in ["bottle", "cable"] {
//!     let detector = params.fit(&Dataset::mvtec(format!("mvtec/{name}"))?)?;
//!     # let _ = detector;
//! }
//! # Ok::<(), cutpaste::Error>(())
//! ```
//!
//! Unfitted parameters cannot score:
//! ```compile_fail
//! let params = cutpaste::Detector::params();
//! let score = params.score(&image::RgbImage::new(64, 64)); // no such method before `fit`
//! ```
pub mod budget;
mod fit;
mod source;
mod steer;

pub use budget::StageRecord;
pub use fit::ValidDetectorParams;
pub use source::AugmentSource;
pub(crate) use source::{check_source, views_batch};

use crate::augment::Augmentation;
use crate::data::{Dataset, DEFAULT_SIDE};
use crate::density::Density;
use crate::detector::Detector;
use crate::error::{Error, Result};
use crate::localize::LocalizerParams;
use crate::model::{ClassifierConfig, Control, FastPath, HeadConfig, Progress, TrainParams};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tch::Device;

/// Largest accepted [`DetectorParams::image_size`]: one 4096² fp32 image is 200 MB on the
/// device, so larger sides are far outside what the method needs (the paper uses 256).
pub const MAX_IMAGE_SIZE: u32 = 4096;

/// The backbone: ResNet-18, from scratch (the paper's default) or initialised from a local
/// safetensors file with torchvision parameter names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Backbone {
    /// Optional pretrained weights (torchvision names; `fc.*` ignored).
    pub pretrained: Option<PathBuf>,
}

impl Backbone {
    /// ResNet-18 from scratch (random initialisation), as in the paper.
    pub fn resnet18() -> Self {
        Self::default()
    }
    /// Initialises the backbone from a safetensors file with torchvision names.
    pub fn pretrained(mut self, path: impl Into<PathBuf>) -> Self {
        self.pretrained = Some(path.into());
        self
    }
}

/// Where the image-level score comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ImageScore {
    /// The density of the image model's pooled `layer4` features (PAPER.md stage 2; the paper's
    /// image-level protocol).
    #[default]
    Pooled,
    /// **[our choice for CPU budgets]** The mean of the top 1 % of the localizer's anomaly map
    /// (PAPER.md §4.2 scores images from the patch model by the map's maximum; see
    /// [`Localizer::image_scores`](crate::localize::Localizer::image_scores)). Needs a localizer; the image
    /// model is then not trained separately: it is a copy of the patch model, and the pooled
    /// density is still fitted on it (for [`Detector::embed`] and GradCAM).
    Map,
    /// **[our choice for CPU budgets]** Both scores of one network: [`Map`](Self::Map)'s and
    /// the pooled density of the same patch model's features of the whole image at the input
    /// side, each standardised by its mean and standard deviation over normal images, summed
    /// with the pooled one weighted by `min(1, training images / 512)` (see
    /// [`ScoreScale`](crate::detector::ScoreScale) for where the statistics come from). The
    /// map finds small local defects; the pooled score finds defects that change the whole
    /// image. Needs a localizer, like `Map`. The CLI's dense recipe uses it.
    Combined,
}

impl ImageScore {
    /// Whether images are scored from the localizer's map (alone or combined).
    pub fn uses_map(self) -> bool {
        matches!(self, ImageScore::Map | ImageScore::Combined)
    }
}

/// Every parameter of a CutPaste detector. [`Detector::params`] gives the paper's defaults:
/// 3-way augmentation, ResNet-18 from scratch, 256² inputs, SGD 0.03 / cosine / 65,536 steps with
/// 32 source images a step, Gaussian density with Ledoit–Wolf, seed 0, CUDA if available.
///
/// Serialisable with serde as one record (a detector checkpoint stores the parameters it was
/// fitted with this way). Missing fields take the defaults above, so a configuration file need
/// only name what differs; the device is written as `"cpu"`, `"cuda:N"`, `"mps"` or
/// `"vulkan"`. A [`Density::custom`](crate::density::Density::custom) estimator cannot be
/// serialised (an error). Deserialised values are unchecked: [`check`](Self::check) them.
///
/// ```
/// use cutpaste::prelude::*;
/// let params: DetectorParams =
///     serde_json::from_str(r#"{"image_size": 64, "seed": 7, "device": "cpu"}"#).unwrap();
/// assert_eq!(params.input_size(), 64);
/// let json = serde_json::to_string(&params).unwrap();
/// assert_eq!(serde_json::from_str::<DetectorParams>(&json).unwrap(), params);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DetectorParams {
    pub(crate) augmentation: Augmentation,
    pub(crate) backbone: Backbone,
    pub(crate) head: HeadConfig,
    pub(crate) training: TrainParams,
    pub(crate) batch_images: usize,
    pub(crate) density: Density,
    pub(crate) image_size: u32,
    #[serde(with = "crate::serde_helpers::device")]
    pub(crate) device: Device,
    pub(crate) fast_path: Option<FastPath>,
    pub(crate) seed: u64,
    pub(crate) localizer: Option<LocalizerParams>,
    pub(crate) image_score: ImageScore,
}

impl Default for DetectorParams {
    fn default() -> Self {
        Self {
            augmentation: Augmentation::three_way(),
            backbone: Backbone::resnet18(),
            head: HeadConfig::paper(),
            training: TrainParams::paper(),
            batch_images: 32,
            density: Density::gaussian(),
            image_size: DEFAULT_SIDE,
            device: Device::cuda_if_available(),
            fast_path: None,
            seed: 0,
            localizer: None,
            image_score: ImageScore::Pooled,
        }
    }
}

/// Progress of [`DetectorParams::fit_with`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum FitEvent {
    /// One self-supervised training step finished.
    Train(Progress),
    /// Features of `done` of `total` training images were extracted for the density.
    Features {
        /// Images done.
        done: usize,
        /// All training images.
        total: usize,
    },
    /// One training step of the patch model (localizer) finished.
    LocalizerTrain(Progress),
    /// Dense patch features of `done` of `total` training images were extracted for the
    /// patch Gaussians.
    LocalizerFeatures {
        /// Images done.
        done: usize,
        /// All training images.
        total: usize,
    },
}

impl DetectorParams {
    setter!(
        /// The augmentation label set and its parameters (default: 3-way).
        augmentation: Augmentation
    );
    setter!(
        /// The backbone (default: ResNet-18 from scratch).
        backbone: Backbone
    );
    setter!(
        /// The MLP head (default: one hidden 512 layer, 128-d embedding).
        head: HeadConfig
    );
    setter!(
        /// Optimisation parameters (default: the paper's; its seed is overridden by [`seed`](Self::seed)).
        training: TrainParams
    );
    setter!(
        /// Source images per training step (paper: 32; the batch has that × views images).
        batch_images: usize
    );
    setter!(
        /// The density estimator fitted on the pooled features (default: Gaussian, Ledoit–Wolf).
        density: Density
    );
    setter!(
        /// Square side images are resized to (paper: 256; 32 to [`MAX_IMAGE_SIZE`]).
        image_size: u32
    );
    setter!(
        /// Where the network runs (default: `Device::cuda_if_available()`).
        device: Device
    );
    setter!(
        /// Seed of everything random (initialisation, augmentations, batches).
        seed: u64
    );
    accessors!(
        /// Where the image score comes from (default: the paper's pooled features).
        image_score, get_image_score: ImageScore
    );

    /// Precision and memory layout of the forward pass (default: [`FastPath::auto`]).
    pub fn fast_path(mut self, fast_path: FastPath) -> Self {
        self.fast_path = Some(fast_path);
        self
    }

    /// Adds the patch localizer stage (PAPER.md "Localization"); none by default. The fitted
    /// detector then answers [`Detector::localize`] and its evaluation reports pixel metrics.
    pub fn localizer(mut self, localizer: LocalizerParams) -> Self {
        self.localizer = Some(localizer);
        self
    }

    /// The localizer configured, if any.
    pub fn localizer_config(&self) -> Option<&LocalizerParams> {
        self.localizer.as_ref()
    }

    /// The training hyper-parameters configured (for a fitted detector's
    /// [`params_used`](crate::detector::Detector::params_used): the steps actually planned).
    pub fn training_config(&self) -> &TrainParams {
        &self.training
    }

    /// The augmentation configured.
    pub fn augmentation_config(&self) -> &Augmentation {
        &self.augmentation
    }

    /// The square input side.
    pub fn input_size(&self) -> u32 {
        self.image_size
    }

    /// Validates every value and their combinations; errors name the parameter. A CUDA device
    /// this build or machine cannot use is an [`Error::DeviceUnavailable`]. On success returns
    /// the parameters as a [`ValidDetectorParams`], which fits without checking again.
    pub fn check(&self) -> Result<ValidDetectorParams> {
        crate::model::check_device(self.device)?;
        if !(32..=MAX_IMAGE_SIZE).contains(&self.image_size) {
            return Err(Error::invalid_param(
                "image_size",
                format!(
                    "must be in 32..={MAX_IMAGE_SIZE} (paper: 256), got {}",
                    self.image_size
                ),
            ));
        }
        if self.batch_images == 0 {
            return Err(Error::invalid_param(
                "batch_images",
                "must be >= 1 (paper: 32)",
            ));
        }
        self.augmentation.check()?;
        self.augmentation
            .check_image(self.image_size, self.image_size)
            .map_err(|e| {
                Error::invalid_param("image_size", format!("too small for the augmentation: {e}"))
            })?;
        self.head.check()?;
        self.training.check()?;
        self.density.check()?;
        if let Some(l) = &self.localizer {
            l.check(self.image_size, &self.augmentation)?;
        } else if self.image_score.uses_map() {
            return Err(Error::invalid_param(
                "image_score",
                format!(
                    "{:?} scores images by the localizer's map; add a localizer \
                     (DetectorParams::localizer(LocalizerParams::dense())) or use \
                     ImageScore::Pooled",
                    self.image_score
                ),
            ));
        }
        if let Some(p) = &self.backbone.pretrained {
            if !p.is_file() {
                return Err(Error::invalid_param(
                    "backbone.pretrained",
                    format!(
                        "{} is not a file; give a safetensors file with torchvision names",
                        p.display()
                    ),
                ));
            }
        }
        Ok(ValidDetectorParams(self.clone()))
    }

    /// [`check`](Self::check)s, then trains on the training images of `train` and fits the
    /// density: the shortcut for `params.check()?.fit(train)`. See
    /// [`ValidDetectorParams::fit_with`].
    pub fn fit(&self, train: &Dataset) -> Result<Detector> {
        self.check()?.fit(train)
    }

    /// [`check`](Self::check)s, then fits as [`ValidDetectorParams::fit_with`] (progress to
    /// `callback`; what a [`Control::Stop`] does is described there).
    pub fn fit_with(
        &self,
        train: &Dataset,
        callback: impl FnMut(&FitEvent) -> Control,
    ) -> Result<Detector> {
        self.check()?.fit_with(train, callback)
    }

    /// [`check`](Self::check)s, then fits on in-memory normal images as
    /// [`ValidDetectorParams::fit_images_with`].
    pub fn fit_images_with(
        &self,
        images: Vec<RgbImage>,
        callback: impl FnMut(&FitEvent) -> Control,
    ) -> Result<Detector> {
        self.check()?.fit_images_with(images, callback)
    }

    /// The classifier these params describe: the augmentation's classes, the head, and the
    /// fast path ([`FastPath::auto`](crate::model::FastPath::auto) unless one was set). The
    /// image model and the localizer's patch model are both built from it.
    pub(crate) fn classifier_config(&self) -> ClassifierConfig {
        let mut config = ClassifierConfig::new(self.augmentation.num_classes() as i64, self.device);
        config.head = self.head.clone();
        if let Some(f) = self.fast_path {
            config.fast_path = f;
        }
        config
    }
}
