//! Checked parameters ([`ValidDetectorParams`]) and the fit they drive: the image model (or
//! the localizer's patch model), the density and the image score's statistics.
use super::budget::{self, plan_steps, Deadline, StageRecord, PROBE_IMAGES};
use super::steer::Steer;
use super::{AugmentSource, DetectorParams, FitEvent, ImageScore};
use crate::data::{resize_rgb, Dataset};
use crate::density::FittedDensity;
use crate::detector::{Detector, SCALE_FOLDS};
use crate::error::{Error, Result};
use crate::localize::Localizer;
use crate::model::{Classifier, Control};
use image::RgbImage;
use ndarray::Array2;
use std::sync::Arc;
use std::time::Instant;

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
pub struct ValidDetectorParams(pub(super) DetectorParams);

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
        // the density's own minimum first: the Ledoit-Wolf Gaussian's (3) is the larger one
        self.density.check_samples(n)?;
        let combined = self.localizer.is_some() && self.image_score == ImageScore::Combined;
        if combined && !self.combined_scale_fits(n) {
            let needed = (n + 1..n + 64)
                .find(|&m| self.combined_scale_fits(m))
                .unwrap_or(n + 1);
            return Err(Error::invalid_input(
                "train",
                format!(
                    "the combined image score standardises its map and pooled scores over the \
                     training images, the pooled one by {SCALE_FOLDS}-fold cross-validation of \
                     the density, which needs at least {needed} (got {n}); add normal images, \
                     or score by the map alone (ImageScore::Map, `--image-score map`)"
                ),
            ));
        }
        Ok(())
    }

    /// Whether `n` training images are enough for [`ImageScore::Combined`]'s statistics: at
    /// least 2 scores, and every fold of the cross-validated pooled scores
    /// (`detector::scale::cross_validated_scores`) fits the density on what the fold leaves.
    fn combined_scale_fits(&self, n: usize) -> bool {
        let rows = crate::detector::scale::smallest_fold_fit(n, SCALE_FOLDS);
        n >= 2 && self.density.check_samples(rows).is_ok()
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
        let record = match deadline {
            Some(d) => {
                let norm = training.normalization;
                let probe = &images[..PROBE_IMAGES.min(images.len())];
                let config = classifier.config().clone();
                plan_steps(
                    "image",
                    d,
                    share,
                    &config,
                    self.device,
                    &mut source,
                    &mut training,
                    images.len(),
                    |c| {
                        crate::detector::embed_images(c, &norm, probe, |_| Control::Continue)
                            .map(|_| ())
                    },
                )?
            }
            None => budget::fixed("image", training.steps),
        };
        let record = budget::train_stage(&mut classifier, &mut source, &training, record, |p| {
            callback(&FitEvent::Train(p.clone()))
        })?;
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
        crate::linalg::finite_features(features.view())?;
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
