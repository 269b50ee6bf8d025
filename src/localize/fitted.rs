//! The fitted [`Localizer`]: patch model + patch Gaussians, and its fit.
use super::dense::dense_grid;
use super::features::grid_side;
use super::fit::{features_of, fit_gaussians};
use super::gaussians::PatchGaussians;
use super::params::{FeatureMode, LocalizerParams, PatchDensity};
use super::source::PatchSource;
use super::upsample::{resize_bilinear, upsample_dense, upsample_scores};
use crate::data::synthetic::mix;
use crate::data::Normalization;
use crate::error::{Error, Result};
use crate::heatmap::AnomalyMap;
use crate::model::{Classifier, Control, SharedClassifier};
use crate::pipeline::budget::{self, plan_steps, Deadline, PROBE_IMAGES};
use crate::pipeline::{FitEvent, StageRecord, ValidDetectorParams};
use image::RgbImage;
use ndarray::Array2;
use std::sync::Arc;

/// Seed stream of the patch model (distinct from the image model's).
const PATCH_STREAM: u64 = 0x10CA_112E;

/// Share of a map's pixels whose mean is the image score (see [`Localizer::image_scores`]).
pub const TOP_FRACTION: f64 = 0.01;

/// Mean of the largest [`TOP_FRACTION`] of `map`'s values (at least one).
pub fn top_mean(map: &Array2<f32>) -> f32 {
    let mut v: Vec<f32> = map.iter().copied().collect();
    let k = ((v.len() as f64 * TOP_FRACTION) as usize).clamp(1, v.len().max(1));
    if v.is_empty() {
        return f32::NAN;
    }
    // the k largest values in O(n): partition around the k-th largest
    v.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    v[..k].iter().sum::<f32>() / k as f32
}

/// A fitted patch localizer (PAPER.md "Localization"): the patch-trained classifier, the
/// patch Gaussians, and the parameters. Maps are **higher = more anomalous**.
#[derive(Debug)]
pub struct Localizer {
    classifier: Classifier,
    gaussians: PatchGaussians,
    params: LocalizerParams,
    side: u32,
    normalization: Normalization,
}

/// A localizer's parts, its network's variables shared ([`Localizer::share`]); `Send`.
#[derive(Debug)]
pub(crate) struct SharedLocalizer {
    classifier: SharedClassifier,
    gaussians: PatchGaussians,
    params: LocalizerParams,
    side: u32,
    normalization: Normalization,
}

impl SharedLocalizer {
    /// The localizer, its network on the shared variables.
    pub(crate) fn build(self) -> Result<Localizer> {
        Ok(Localizer::from_parts(
            self.classifier.build()?,
            self.gaussians,
            self.params,
            self.side,
            self.normalization,
        ))
    }
}

impl Localizer {
    /// Trains the patch model on crops of `images` (normal only, any size: each is resized to
    /// the working resolution first) and fits the patch Gaussians on the dense features of the
    /// un-augmented images. With `skip_training` (an earlier stage was stopped by the
    /// callback) the patch model keeps its initialisation and the record says it stopped at 0.
    /// `lp` is `det`'s localizer, checked with it.
    pub(crate) fn fit(
        lp: &LocalizerParams,
        det: &ValidDetectorParams,
        images: &[RgbImage],
        deadline: Option<Deadline>,
        skip_training: bool,
        callback: &mut dyn FnMut(&FitEvent) -> Control,
    ) -> Result<(Self, StageRecord)> {
        let lp = &lp.clone().unfitted();
        let side = det.input_size();
        let images = Arc::new(prepare_all(lp, side, images));
        // images smaller than the crop at the working size (e.g. 32² tests) train on whole images
        let short = images.iter().map(|i| i.width().min(i.height())).min();
        let crop = lp.crop_size.min(short.unwrap_or(lp.crop_size));
        if crop < lp.crop_size {
            log::info!(
                "training crops of {crop} px: the images are smaller than {}",
                lp.crop_size
            );
        }
        let lp = &lp.clone().crop_size(crop);
        let (classifier, record) =
            train_patch_model(lp, det, &images, deadline, skip_training, callback)?;
        let norm = det.training.normalization;
        let gaussians = fit_gaussians(&classifier, &norm, lp, &images, callback)?;
        let params = lp
            .clone()
            .steps(record.planned_steps)
            .fitted_to(&gaussians, &images);
        let loc = Self {
            classifier,
            gaussians,
            params,
            side,
            normalization: norm,
        };
        Ok((loc, record))
    }

    /// Refits the dense features and Gaussians with `lp` (e.g. another [`FeatureMode`](super::FeatureMode),
    /// density, patch size or σ) on `images` (already at the input side), keeping the trained
    /// patch model; `lp`'s training fields (`crop_size`, `steps`, `batch_images`) are recorded
    /// but unused. `images` may have any size (they are resized to `lp`'s working size). On
    /// error the localizer is unchanged.
    pub(crate) fn refit(
        &mut self,
        lp: &LocalizerParams,
        images: &[RgbImage],
        callback: &mut dyn FnMut(&FitEvent) -> Control,
    ) -> Result<()> {
        let lp = &lp.clone().unfitted();
        let images = prepare_all(lp, self.side, images);
        let g = fit_gaussians(&self.classifier, &self.normalization, lp, &images, callback)?;
        self.params = lp.clone().fitted_to(&g, &images);
        self.gaussians = g;
        Ok(())
    }

    /// Its parts, the network's variables shared rather than copied, to become a localizer on
    /// another thread ([`SharedLocalizer::build`]).
    pub(crate) fn share(&self) -> SharedLocalizer {
        SharedLocalizer {
            classifier: self.classifier.share(),
            gaussians: self.gaussians.clone(),
            params: self.params.clone(),
            side: self.side,
            normalization: self.normalization,
        }
    }

    pub(crate) fn from_parts(
        classifier: Classifier,
        gaussians: PatchGaussians,
        params: LocalizerParams,
        side: u32,
        normalization: Normalization,
    ) -> Self {
        Self {
            classifier,
            gaussians,
            params,
            side,
            normalization,
        }
    }

    /// `image` resized to the working size (see [`LocalizerParams::working_size`]).
    pub fn prepare(&self, image: &RgbImage) -> RgbImage {
        prepare_image(&self.params, self.side, image)
    }

    /// The working size (width, height) a `w × h` image is scored at.
    pub fn working_size(&self, w: u32, h: u32) -> (u32, u32) {
        self.params.working_size(w, h, self.side)
    }

    /// The `[rows, cols]` patch (or dense-cell) scores of `image` (resized to the working size
    /// first), higher = more anomalous.
    pub fn score_grid(&self, image: &RgbImage) -> Result<Array2<f32>> {
        Ok(self.score_grids(std::slice::from_ref(image))?.remove(0))
    }

    /// [`score_grid`](Self::score_grid) of several images; dense features are batched.
    pub fn score_grids(&self, images: &[RgbImage]) -> Result<Vec<Array2<f32>>> {
        let prepared: Vec<RgbImage> = images.iter().map(|i| self.prepare(i)).collect();
        let feats = features_of(
            &self.classifier,
            &self.normalization,
            &self.params,
            &prepared,
        )?;
        feats
            .iter()
            .zip(&prepared)
            .map(|(f, img)| {
                let (rows, cols) = grid_dims(&self.params, img);
                let scores = self.gaussians.score(f).map_err(|e| match e {
                    Error::DimensionMismatch { expected, got, .. } => Error::invalid_input(
                        "image",
                        format!(
                            "at its working size {}×{} the image has {got} grid cells, but this \
                             localizer was fitted on {expected} (a checkpoint written before \
                             the training size was recorded): resize images to the training \
                             images' size, or retrain with this version",
                            img.width(),
                            img.height()
                        ),
                    ),
                    other => other,
                })?;
                // [rows · cols] -> [rows, cols]
                scores
                    .into_shape_with_order((rows, cols))
                    .map_err(|e| Error::internal(format!("shape of `scores`: {e}")))
            })
            .collect()
    }

    /// The map at the working size (before resizing to the image's own size).
    pub fn input_map(&self, image: &RgbImage) -> Result<Array2<f32>> {
        Ok(self.input_maps(std::slice::from_ref(image))?.remove(0))
    }

    /// [`input_map`](Self::input_map) of several images (batched dense features).
    pub fn input_maps(&self, images: &[RgbImage]) -> Result<Vec<Array2<f32>>> {
        let p = &self.params;
        self.score_grids(images)?
            .iter()
            .map(|grid| match p.mode {
                FeatureMode::Dense => upsample_dense(grid.view(), p.sigma),
                _ => upsample_scores(
                    grid.view(),
                    p.patch_size as usize,
                    p.stride as usize,
                    p.sigma,
                ),
            })
            .collect()
    }

    /// Image-level scores from the maps: the mean of the highest [`TOP_FRACTION`] of each
    /// image's working-size map pixels (at least one pixel), higher = more anomalous. PAPER.md
    /// §4.2 takes the map's maximum; the top-1 % mean is less sensitive to a single noisy cell
    /// (mpdd/metal_plate, tied Gaussians: image AUROC 99.2 against 97.3 for the maximum).
    pub fn image_scores(&self, images: &[RgbImage]) -> Result<Vec<f32>> {
        Ok(self.input_maps(images)?.iter().map(top_mean).collect())
    }

    /// The anomaly map of `image` at its own size (any aspect ratio), higher = more anomalous.
    /// The patch model's image score is its [`max`](AnomalyMap::max).
    pub fn localize(&self, image: &RgbImage) -> Result<AnomalyMap> {
        let (w, h) = image.dimensions();
        if w == 0 || h == 0 {
            return Err(Error::invalid_input("image", "the image is empty"));
        }
        let map = self.input_map(image)?;
        AnomalyMap::new(resize_bilinear(map.view(), w, h)?)
    }

    /// Bytes held by the fitted state: the patch classifier's variables plus the PCA basis and
    /// Gaussians (what a checkpoint stores under `localizer.`).
    pub fn memory_bytes(&self) -> usize {
        let net: usize = self
            .classifier
            .named_variables()
            .values()
            .map(|t| t.numel() * t.kind().elt_size_in_bytes())
            .sum();
        net + self.gaussians.memory_bytes()
    }

    /// The parameters it was fitted with.
    pub fn params(&self) -> &LocalizerParams {
        &self.params
    }

    /// The patch-trained classifier.
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// The fitted patch Gaussians.
    pub fn gaussians(&self) -> &PatchGaussians {
        &self.gaussians
    }

    /// The detector's square input side (the working side when `resolution` is 0).
    pub fn input_side(&self) -> u32 {
        self.side
    }
}

impl LocalizerParams {
    /// Without the fitted working size (the user's parameters, before a fit).
    fn unfitted(self) -> Self {
        Self {
            fitted_size: None,
            ..self
        }
    }

    /// The parameters a fitted localizer records: the resolved density and PCA width, and for
    /// per-cell densities the working size of the (prepared) training images.
    fn fitted_to(self, g: &PatchGaussians, images: &[RgbImage]) -> Self {
        let per_cell = matches!(
            g.kind(),
            PatchDensity::PerLocation | PatchDensity::Tied | PatchDensity::TiedNormalized
        );
        let size = images.first().filter(|_| per_cell).map(|i| i.dimensions());
        Self {
            fitted_size: size,
            ..self.density(g.kind()).pca_dim(g.dim())
        }
    }
}

/// `image` resized to `lp`'s working size (a copy when it already has it); `side` is the
/// detector's input side (used when `lp.resolution` is 0).
pub fn prepare_image(lp: &LocalizerParams, side: u32, image: &RgbImage) -> RgbImage {
    let (w, h) = image.dimensions();
    let (tw, th) = lp.working_size(w, h, side);
    if (tw, th) == (w, h) {
        return image.clone();
    }
    image::imageops::resize(image, tw, th, crate::data::image_io::RESIZE_FILTER)
}

fn prepare_all(lp: &LocalizerParams, side: u32, images: &[RgbImage]) -> Vec<RgbImage> {
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        images
            .par_iter()
            .map(|i| prepare_image(lp, side, i))
            .collect()
    }
    #[cfg(not(feature = "parallel"))]
    {
        images.iter().map(|i| prepare_image(lp, side, i)).collect()
    }
}

/// `(rows, cols)` of the score grid of a working-size image.
pub(crate) fn grid_dims(lp: &LocalizerParams, image: &RgbImage) -> (usize, usize) {
    let (w, h) = image.dimensions();
    match lp.mode {
        FeatureMode::Dense => dense_grid(w, h),
        _ => {
            let g = grid_side(w, lp.patch_size, lp.stride);
            (g, g)
        }
    }
}

/// The patch model (PAPER.md "Localization"): trained on crops of `images` for `lp.steps`,
/// or the steps planned under `deadline`, until the callback stops it; left at its
/// initialisation when `skip` (an earlier stage was stopped).
fn train_patch_model(
    lp: &LocalizerParams,
    det: &ValidDetectorParams,
    images: &Arc<Vec<RgbImage>>,
    deadline: Option<Deadline>,
    skip: bool,
    callback: &mut dyn FnMut(&FitEvent) -> Control,
) -> Result<(Classifier, StageRecord)> {
    let seed = mix(det.seed, PATCH_STREAM);
    let config = det.classifier_config();
    // pretrained weights apply to the patch model too (the dense recipe's only network)
    let mut classifier = det.new_classifier(seed)?;
    if skip {
        let mut record = budget::fixed("localizer", lp.steps);
        record.stopped_at = Some(0);
        return Ok((classifier, record));
    }
    let mut source = PatchSource::new(
        images.clone(),
        det.augmentation.clone(),
        lp.crop_size,
        lp.batch_images,
        seed,
    )?;
    let mut training = det.training.clone().steps(lp.steps).seed(seed);
    // the image model's policy, to a file of the patch model's own
    training.checkpoint = det
        .training
        .checkpoint
        .as_ref()
        .map(|c| c.for_stage("patch"));
    training.budget = None;
    let norm = training.normalization;
    let record = match deadline {
        Some(d) => {
            let probe = &images[..PROBE_IMAGES.min(images.len())];
            let post = images.len() + lp.pca_images.min(images.len());
            plan_steps(
                "localizer",
                d,
                1.0,
                &config,
                det.device,
                &mut source,
                &mut training,
                post,
                |c| features_of(c, &norm, lp, probe).map(|_| ()),
            )?
        }
        None => budget::fixed("localizer", lp.steps),
    };
    let record = budget::train_stage(&mut classifier, &mut source, &training, record, |p| {
        callback(&FitEvent::LocalizerTrain(p.clone()))
    })?;
    Ok((classifier, record))
}
