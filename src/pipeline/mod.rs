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
mod source;
mod steer;

pub use budget::StageRecord;
pub use source::AugmentSource;
pub(crate) use source::{check_source, views_batch};

use crate::augment::Augmentation;
use crate::data::{resize_rgb, Dataset, DEFAULT_SIDE};
use crate::density::Density;
use crate::density::FittedDensity;
use crate::detector::Detector;
use crate::error::{Error, Result};
use crate::localize::{Localizer, LocalizerParams};
use crate::model::{
    train, Classifier, ClassifierConfig, Control, FastPath, HeadConfig, Progress, TrainParams,
};
use budget::{plan_steps, Deadline, PROBE_IMAGES};
use image::RgbImage;
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use steer::Steer;
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

/// [`DetectorParams`] that passed [`DetectorParams::check`]: the only value that fits. It
/// dereferences to the parameters for reading (e.g. [`input_size`](DetectorParams::input_size));
/// to change a value, take them back with [`into_inner`](Self::into_inner) and check again.
///
/// ```no_run
/// use cutpaste::prelude::*;
/// let params: ValidDetectorParams = Detector::params().image_size(128).check()?;
/// assert_eq!(params.input_size(), 128);
/// let detector = params.fit(&Dataset::mvtec("mvtec/bottle")?)?;
/// // another value: back to the unchecked builder, then check again
/// let other = params.into_inner().seed(1).check()?;
/// # let _ = (detector, other);
/// # Ok::<(), cutpaste::Error>(())
/// ```
///
/// Checked parameters cannot be changed in place:
/// ```compile_fail
/// let params = cutpaste::Detector::params().check().unwrap();
/// let changed = params.seed(1); // cannot move out of the checked value
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ValidDetectorParams(DetectorParams);

impl std::ops::Deref for ValidDetectorParams {
    type Target = DetectorParams;
    fn deref(&self) -> &DetectorParams {
        &self.0
    }
}

impl ValidDetectorParams {
    /// The checked parameters, to change and [`check`](DetectorParams::check) again.
    pub fn into_inner(self) -> DetectorParams {
        self.0
    }

    /// Trains on the training images of `train` and fits the density. See [`fit_with`](Self::fit_with).
    pub fn fit(&self, train: &Dataset) -> Result<Detector> {
        self.fit_with(train, |_| Control::Continue)
    }

    /// As [`fit`](Self::fit), reporting progress to `callback`. **Stopping early is an
    /// outcome, not an error:**
    ///
    /// - [`Control::Stop`] answered to a training event ([`FitEvent::Train`],
    ///   [`FitEvent::LocalizerTrain`]) ends that training after the current step; the fit then
    ///   completes a usable detector from what was trained (features, density, the
    ///   localizer's Gaussians). A training stage still to come (the patch model after the
    ///   image model) is not trained: its network keeps its initialisation. Each stage's
    ///   [`StageRecord::stopped_at`] says where it stopped (planned vs done steps), and
    ///   [`Detector::stopped_early`] is true. Feature events are still reported afterwards,
    ///   but their answers are ignored: the stop was already honoured.
    /// - [`Control::Stop`] answered to a feature event ([`FitEvent::Features`],
    ///   [`FitEvent::LocalizerFeatures`]) when no training was stopped before returns
    ///   [`Error::Stopped`] after the current batch: a density needs the features of every
    ///   training image, so no model can be completed.
    pub fn fit_with(
        &self,
        train: &Dataset,
        callback: impl FnMut(&FitEvent) -> Control,
    ) -> Result<Detector> {
        let t0 = Instant::now();
        // the localizer resizes to its own working size, so it gets the images as they are
        let images = if self.localizer.is_some() {
            crate::data::load_all_native(&train.train)?
        } else {
            train.load_train(self.image_size)?
        };
        self.fit_from(images, t0, callback)
    }

    /// Trains on in-memory normal images (any size: resized to the configured side for the
    /// image model, to the working size for the localizer).
    pub fn fit_images_with(
        &self,
        images: Vec<RgbImage>,
        callback: impl FnMut(&FitEvent) -> Control,
    ) -> Result<Detector> {
        self.fit_from(images, Instant::now(), callback)
    }

    fn fit_from(
        &self,
        images: Vec<RgbImage>,
        t0: Instant,
        callback: impl FnMut(&FitEvent) -> Control,
    ) -> Result<Detector> {
        self.check_for(images.len())?;
        let deadline = self
            .training
            .budget
            .map(|budget| Deadline { start: t0, budget });
        let square: Arc<Vec<RgbImage>> = Arc::new(
            images
                .iter()
                .map(|i| resize_rgb(i, self.image_size))
                .collect(),
        );
        let mut steer = Steer::new(callback);
        let mut used = self.0.clone();
        // the parameters used, as used: the training runs with the detector's seed
        used.training.seed = self.seed;
        let mut records = Vec::new();
        let (classifier, localizer) = match (self.image_score, &self.localizer) {
            (score, Some(lp)) if score.uses_map() => {
                let (loc, rec) =
                    Localizer::fit(lp, self, &images, deadline, false, &mut |e| steer.event(e))?;
                used.localizer = Some(loc.params().clone());
                records.push(rec);
                (loc.classifier().try_clone()?, Some(loc))
            }
            _ => {
                // with a localizer to train after it, the image model gets half the time left
                let share = if self.localizer.is_some() { 0.5 } else { 1.0 };
                let (clf, rec) =
                    self.train_image_model(square.clone(), deadline, share, &mut |e| {
                        steer.event(e)
                    })?;
                used.training.steps = rec.planned_steps;
                records.push(rec);
                (clf, None)
            }
        };
        // the fast path used (FastPath::auto resolved for this machine when none was set)
        used.fast_path = Some(classifier.config().fast_path);
        let (density, features) =
            self.fit_density(&classifier, &square, &mut |e| steer.event(e))?;
        let scale = match (&localizer, self.image_score) {
            (Some(loc), ImageScore::Combined) => Some(crate::detector::scale::training_scale(
                &self.density,
                loc,
                &images,
                features.view(),
            )?),
            _ => None,
        };
        let localizer = match (localizer, &self.localizer) {
            (Some(l), _) => Some(l),
            (None, Some(lp)) => {
                let skip = steer.stopped();
                let (loc, rec) =
                    Localizer::fit(lp, self, &images, deadline, skip, &mut |e| steer.event(e))?;
                used.localizer = Some(loc.params().clone());
                records.push(rec);
                Some(loc)
            }
            (None, None) => None,
        };
        Ok(Detector::new(classifier, density, used, t0.elapsed())
            .with_localizer(localizer)
            .with_score_scale(scale)
            .with_training_record(records))
    }

    /// That `n` training images can fit: checked before training, not after it (e.g. a density
    /// that cannot fit this few images). The parameters themselves were checked already.
    fn check_for(&self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(Error::invalid_input(
                "train",
                "no training images were given",
            ));
        }
        self.density.check_samples(n)
    }

    /// Stage 1 (PAPER.md): the self-supervised image model, for the planned or asked steps.
    fn train_image_model(
        &self,
        images: Arc<Vec<RgbImage>>,
        deadline: Option<Deadline>,
        share: f64,
        callback: &mut impl FnMut(&FitEvent) -> Control,
    ) -> Result<(Classifier, StageRecord)> {
        let mut classifier = self.new_classifier(self.seed)?;
        let mut source = AugmentSource::new(
            images.clone(),
            self.augmentation.clone(),
            self.batch_images,
            self.seed,
        )?;
        let mut training = self.training.clone().seed(self.seed);
        training.budget = None;
        let mut record = match deadline {
            Some(d) => {
                let norm = training.normalization;
                let probe = &images[..PROBE_IMAGES.min(images.len())];
                let config = classifier.config().clone();
                let rec = plan_steps(
                    "image",
                    d,
                    share,
                    &config,
                    self.device,
                    &mut source,
                    &training,
                    images.len(),
                    |c| {
                        crate::detector::embed_images(c, &norm, probe, |_| Control::Continue)
                            .map(|_| ())
                    },
                )?;
                training.steps = rec.planned_steps;
                rec
            }
            None => budget::fixed("image", training.steps),
        };
        let t = Instant::now();
        let report = train(&mut classifier, &mut source, &training, |p| {
            callback(&FitEvent::Train(p.clone()))
        })?;
        record.train_seconds = t.elapsed().as_secs_f64();
        record.stopped_at = report.stopped_at;
        Ok((classifier, record))
    }

    /// Stage 2 (PAPER.md): the density is fitted on the pooled features of the
    /// *un-augmented* training images, never on augmented views.
    fn fit_density(
        &self,
        classifier: &Classifier,
        images: &[RgbImage],
        callback: &mut impl FnMut(&FitEvent) -> Control,
    ) -> Result<(FittedDensity, Array2<f32>)> {
        let norm = self.training.normalization;
        // [n, 512] pooled features
        let features = crate::detector::embed_images(classifier, &norm, images, |done| {
            callback(&FitEvent::Features {
                done,
                total: images.len(),
            })
        })?;
        Ok((self.density.fit(features.view())?, features))
    }

    /// A network of [`DetectorParams::classifier_config`] initialised with `seed`, and
    /// from the pretrained backbone when one is set: the image model and the localizer's patch
    /// model are both built here.
    pub(crate) fn new_classifier(&self, seed: u64) -> Result<Classifier> {
        let mut classifier = Classifier::new(&self.classifier_config(), self.device, seed)?;
        if let Some(p) = &self.backbone.pretrained {
            classifier.load_backbone(p)?;
        }
        Ok(classifier)
    }
}
