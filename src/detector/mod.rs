//! The fitted detector: score, embed, threshold, predict, evaluate.
//!
//! Score convention everywhere: **higher = more anomalous** (the density's score of the pooled
//! ResNet-18 features; squared Mahalanobis distance for the Gaussian).
//!
//! Many images at once ([`Detector::score_batch`], [`Detector::score_files`], and so
//! [`Detector::evaluate`]) are scored on the CPU in parallel streams, each a copy of the
//! detector on one core that reads the same weights (`CUTPASTE_SCORE_STREAMS=1` turns it off;
//! see [`MAX_STREAMS`]).
use crate::data::{images_to_tensor, resize_rgb, Dataset, Normalization};
use crate::density::FittedDensity;
use crate::error::{Error, Result};
use crate::heatmap::AnomalyMap;
use crate::localize::{Localizer, LocalizerParams};
use crate::metrics::{aupro, f1_max, per_type_auroc, pixel_auroc, roc_auc};
use crate::model::Classifier;
use crate::pipeline::{DetectorParams, ImageScore, StageRecord};
use image::RgbImage;
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::time::{Duration, Instant};

mod calibration;
mod checkpoint;
mod files;
mod report;
pub(crate) mod scale;
mod streams;
pub use calibration::{quantile, Calibration, CalibrationRule, ThresholdMethod};
pub use checkpoint::{DETECTOR_FORMAT, DETECTOR_FORMAT_VERSION};
pub use report::{ErrorRates, Report, ScoredSample};
pub use scale::{ScaleSource, ScoreScale, Standardiser, SCALE_FOLDS, SCALE_MAP_IMAGES};
pub use streams::MAX_STREAMS;

/// Images per forward pass when embedding or scoring many images.
pub const SCORE_BATCH: usize = 32;

/// A fitted CutPaste detector (from [`DetectorParams::fit`]).
///
/// `Send` but not `Sync`: it holds libtorch tensors, and tch's `Tensor` (a raw pointer to a C++
/// tensor) is not declared `Sync`, so threads cannot share one `&Detector`. To score in
/// parallel, give each thread its own copy ([`try_clone`](Self::try_clone), or
/// [`load`](Self::load) in each thread) or share one `Mutex<Detector>`; `examples/soak.rs`
/// checks that both give the scores of a single thread. One call with many images already uses
/// all cores: [`score_batch`](Self::score_batch) and [`score_files`](Self::score_files) spread
/// the batches over parallel streams.
#[derive(Debug)]
pub struct Detector {
    classifier: Classifier,
    density: FittedDensity,
    params: DetectorParams,
    threshold: Option<f32>,
    calibration: Option<Calibration>,
    fit_time: Duration,
    localizer: Option<Localizer>,
    training_record: Vec<StageRecord>,
    score_scale: Option<ScoreScale>,
    /// Copies for parallel scoring streams, kept between calls (see `streams`).
    replicas: streams::Replicas,
}

/// The decision for one image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Anomaly score (higher = more anomalous).
    pub score: f32,
    /// `score > threshold`.
    pub is_anomalous: bool,
}

/// The mask of `sample` resized (nearest) to `w × h` as booleans (true = defect); all false for
/// a good sample without a mask file, `None` for a defect sample without one.
fn mask_at(sample: &crate::data::Sample, w: u32, h: u32) -> Result<Option<Array2<bool>>> {
    let m = match (&sample.mask, sample.is_anomalous()) {
        (Some(path), _) => crate::data::load_mask(path)?,
        (None, false) => return Ok(Some(Array2::from_elem((h as usize, w as usize), false))),
        (None, true) => return Ok(None),
    };
    let m = image::imageops::resize(&m, w, h, image::imageops::FilterType::Nearest);
    // [h, w] bool, true = defect
    Ok(Some(Array2::from_shape_fn(
        (h as usize, w as usize),
        |(y, x)| m.get_pixel(x as u32, y as u32).0[0] > 127,
    )))
}

/// Pooled `[n, 512]` features of `images` (all of one size), in batches of [`SCORE_BATCH`];
/// `progress(done)` after each batch, whose [`Control::Stop`](crate::model::Control::Stop)
/// ends it with [`Error::Stopped`].
pub(crate) fn embed_images(
    classifier: &Classifier,
    norm: &Normalization,
    images: &[RgbImage],
    mut progress: impl FnMut(usize) -> crate::model::Control,
) -> Result<Array2<f32>> {
    let mut rows: Vec<f32> = Vec::with_capacity(images.len() * 512);
    let mut dim = 0;
    for (i, chunk) in images.chunks(SCORE_BATCH).enumerate() {
        let x = images_to_tensor(chunk, norm, classifier.device())?;
        let f = classifier
            .features(&x)?
            .f_to_device(tch::Device::Cpu)?
            .f_contiguous()?;
        let size = f.size(); // [b, 512]
        dim = size[1] as usize;
        let n = chunk.len() * dim;
        let start = rows.len();
        rows.resize(start + n, 0.0);
        f.f_copy_data(&mut rows[start..], n)?;
        let done = (i * SCORE_BATCH + chunk.len()).min(images.len());
        if progress(done) == crate::model::Control::Stop {
            return Err(Error::Stopped {
                stage: "feature extraction".into(),
                step: done,
            });
        }
    }
    // [n * dim] -> [n, dim]
    Array2::from_shape_vec((images.len(), dim), rows)
        .map_err(|e| Error::internal(format!("shape of `images`: {e}")))
}

impl Detector {
    /// The builder with the paper's defaults; see [`DetectorParams`].
    pub fn params() -> DetectorParams {
        DetectorParams::default()
    }

    pub(crate) fn new(
        classifier: Classifier,
        density: FittedDensity,
        params: DetectorParams,
        fit_time: Duration,
    ) -> Self {
        Self {
            classifier,
            density,
            params,
            threshold: None,
            calibration: None,
            fit_time,
            localizer: None,
            training_record: Vec::new(),
            score_scale: None,
            replicas: streams::Replicas::default(),
        }
    }

    pub(crate) fn with_score_scale(mut self, scale: Option<ScoreScale>) -> Self {
        self.replicas.clear();
        self.score_scale = scale;
        self
    }

    pub(crate) fn with_localizer(mut self, localizer: Option<Localizer>) -> Self {
        self.replicas.clear();
        self.localizer = localizer;
        self
    }

    pub(crate) fn with_training_record(mut self, record: Vec<StageRecord>) -> Self {
        self.training_record = record;
        self
    }

    /// What each training stage planned and did (steps, step time, wall time; the budget when
    /// one was set), in training order.
    pub fn training_record(&self) -> &[StageRecord] {
        &self.training_record
    }

    /// Whether the progress callback stopped a training stage before its planned steps (see
    /// [`StageRecord::stopped_at`]): the detector is complete, its networks less trained.
    pub fn stopped_early(&self) -> bool {
        self.training_record.iter().any(|r| r.stopped_at.is_some())
    }

    fn map_scored(&self) -> Option<&Localizer> {
        match self.params.image_score {
            ImageScore::Map | ImageScore::Combined => self.localizer.as_ref(),
            ImageScore::Pooled => None,
        }
    }

    /// Loads `samples` as scoring sees them: at the localizer's working size when there is a
    /// localizer (maps need the detail), else at the square input side.
    fn load_for_scoring(&self, samples: &[crate::data::Sample]) -> Result<Vec<RgbImage>> {
        match &self.localizer {
            Some(loc) => {
                // the localizer holds tensors (not Sync): resize with a copy of its parameters
                let (lp, side) = (loc.params().clone(), loc.input_side());
                crate::data::load_all_with(samples, move |i| {
                    crate::localize::prepare_image(&lp, side, &i)
                })
            }
            None => crate::data::load_all(samples, self.params.input_size()),
        }
    }

    /// The fitted patch localizer, when [`DetectorParams::localizer`] was set.
    pub fn localizer(&self) -> Option<&Localizer> {
        self.localizer.as_ref()
    }

    /// The anomaly map of `image` at its own size (higher = more anomalous), from the patch
    /// localizer (PAPER.md "Localization"). Errors with [`Error::NotFitted`]
    /// ([`Missing::Localizer`](crate::Missing::Localizer)) when the detector was fitted
    /// without one.
    pub fn localize(&self, image: &RgbImage) -> Result<AnomalyMap> {
        self.fitted_localizer()?.localize(image)
    }

    /// Refits the localizer's dense features and patch Gaussians with new parameters (feature
    /// mode, density, patch size, stride, σ, PCA) on the training images of `train`, keeping its
    /// trained patch model — e.g. to compare exact and fast features on one model. Errors when
    /// no localizer was fitted or `localizer` is invalid (named `localizer.…`).
    pub fn refit_localizer(&mut self, localizer: LocalizerParams, train: &Dataset) -> Result<()> {
        self.replicas.clear();
        let side = self.params.input_size();
        localizer.check(side, &self.params.augmentation)?;
        self.fitted_localizer()?;
        let images = crate::data::load_all_native(&train.train)?;
        if let Some(loc) = self.localizer.as_mut() {
            loc.refit(&localizer, &images, &mut |_| {
                crate::model::Control::Continue
            })?;
        }
        // as a fit records them: the density resolved, the training images' working size
        self.params.localizer = self.localizer.as_ref().map(|l| l.params().clone());
        Ok(())
    }

    fn fitted_localizer(&self) -> Result<&Localizer> {
        self.localizer.as_ref().ok_or_else(|| {
            Error::not_fitted(
                crate::error::Missing::Localizer,
                "this detector was fitted without a localizer; set \
                 DetectorParams::localizer(LocalizerParams::paper()) and fit again",
            )
        })
    }

    /// Pixel AUROC and AUPRO (max FPR 0.3) of the localizer's working-size maps against the
    /// masks resized (nearest) to the same size; `None` without a localizer or when a mask is
    /// missing. `images` are the test images as [`load_for_scoring`](Self::load_for_scoring)
    /// gives them.
    fn pixel_metrics(
        &self,
        dataset: &Dataset,
        images: &[RgbImage],
    ) -> Result<(Option<f64>, Option<f64>)> {
        let Some(loc) = &self.localizer else {
            return Ok((None, None));
        };
        let mut maps = Vec::with_capacity(images.len());
        for chunk in images.chunks(SCORE_BATCH) {
            maps.extend(loc.input_maps(chunk)?);
        }
        let mut masks = Vec::with_capacity(images.len());
        for (s, map) in dataset.test.iter().zip(&maps) {
            let (h, w) = map.dim();
            let Some(m) = mask_at(s, w as u32, h as u32)? else {
                return Ok((None, None));
            };
            masks.push(m);
        }
        let mv: Vec<_> = maps.iter().map(|m| m.view()).collect();
        let kv: Vec<_> = masks.iter().map(|m| m.view()).collect();
        Ok((Some(pixel_auroc(&mv, &kv)?), Some(aupro(&mv, &kv, 0.3)?)))
    }

    /// The parameters it was fitted with.
    pub fn params_used(&self) -> &DetectorParams {
        &self.params
    }

    /// The fitted density.
    pub fn density(&self) -> &FittedDensity {
        &self.density
    }

    /// The trained classifier (backbone + head).
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// Wall time of `fit`.
    pub fn fit_time(&self) -> Duration {
        self.fit_time
    }

    /// `images` as the image score sees them: at the localizer's working size when images are
    /// scored by its map ([`ImageScore::Map`]), else at the square input side.
    fn prepare(&self, images: &[RgbImage]) -> Vec<RgbImage> {
        let resize = self.file_resizer();
        images.iter().map(|i| resize.apply(i)).collect()
    }

    /// Pooled 512-d features of `images` (any sizes; resized to the input side), `[n, 512]`.
    pub fn embed(&self, images: &[RgbImage]) -> Result<Array2<f32>> {
        let norm = self.params.training.normalization;
        let side = self.params.input_size();
        let square: Vec<RgbImage> = images.iter().map(|i| resize_rgb(i, side)).collect();
        embed_images(&self.classifier, &norm, &square, |_| {
            crate::model::Control::Continue
        })
    }

    /// Anomaly scores of `images` (higher = more anomalous), batched. Equal to [`score`](Self::score)
    /// image by image up to float rounding of batched convolutions (≤ 1e-3 relative on CPU fp32).
    /// With [`ImageScore::Map`] the score is the maximum of the localizer's map. On a CPU with
    /// several intra-op threads the images are scored in parallel streams, one copy of the
    /// detector per stream (made on the first such call and kept; see [`MAX_STREAMS`]).
    pub fn score_batch(&self, images: &[RgbImage]) -> Result<Vec<f32>> {
        if self.plan(images.len()).streams > 1 {
            let work = |det: &Detector, range: Range<usize>| det.score_one_stream(&images[range]);
            return self.in_streams(images.len(), &work, &mut |_| {});
        }
        self.score_one_stream(images)
    }

    /// [`score_batch`](Self::score_batch) on this thread, batch after batch.
    fn score_one_stream(&self, images: &[RgbImage]) -> Result<Vec<f32>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        if self.params.image_score == ImageScore::Combined {
            let scale = self.combined_scale()?;
            let (map, pooled) = self.score_parts(images)?.ok_or_else(|| {
                Error::internal("ImageScore::Combined without a localizer (check() requires one)")
            })?;
            return Ok(map
                .iter()
                .zip(&pooled)
                .map(|(&m, &p)| scale.combine(m, p))
                .collect());
        }
        let Some(loc) = self.map_scored() else {
            return Ok(self.density.score(self.embed(images)?.view())?.to_vec());
        };
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(SCORE_BATCH) {
            out.extend(loc.image_scores(chunk)?);
        }
        Ok(out)
    }

    /// [`ImageScore::Combined`]'s statistics, which fit and load always set.
    fn combined_scale(&self) -> Result<ScoreScale> {
        self.score_scale.ok_or_else(|| {
            Error::internal("ImageScore::Combined without its score scale (fit and load set one)")
        })
    }

    /// The two scores of each image (map, pooled) that [`ImageScore::Combined`] adds after
    /// standardising them; `None` when the detector has no localizer.
    pub fn score_parts(&self, images: &[RgbImage]) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
        let Some(loc) = self.localizer.as_ref() else {
            return Ok(None);
        };
        let (mut map, mut pooled) = (Vec::new(), Vec::new());
        for chunk in images.chunks(SCORE_BATCH) {
            map.extend(loc.image_scores(chunk)?);
            pooled.extend(self.density.score(self.embed(chunk)?.view())?.iter());
        }
        Ok(Some((map, pooled)))
    }

    /// The statistics [`ImageScore::Combined`] standardises its two scores by (`None` for the
    /// other image scores). See [`ScoreScale`].
    pub fn score_scale(&self) -> Option<&ScoreScale> {
        self.score_scale.as_ref()
    }

    /// Sets [`ImageScore::Combined`]'s statistics from `normals`: defect-free images that were
    /// **not** used in training (at least 2; e.g. a held-out share of the training folder),
    /// instead of `fit`'s estimate from the training images (the pooled weight stays). With few
    /// images the estimate is noisy: measured on the dev sets, `fit`'s is as good as one from
    /// 10 % of the training folder. Set it before any threshold, which depends on it: an
    /// existing threshold is cleared. Errors ([`Error::InvalidParam`] `image_score`) for the
    /// other image scores.
    pub fn fit_score_scale(&mut self, normals: &[RgbImage]) -> Result<ScoreScale> {
        self.replicas.clear();
        if self.params.image_score != ImageScore::Combined {
            return Err(Error::invalid_param(
                "image_score",
                format!(
                    "{:?} uses one score: only ImageScore::Combined standardises its scores",
                    self.params.image_score
                ),
            ));
        }
        let pooled_weight = self.combined_scale()?.pooled_weight;
        let (map, pooled) = self.score_parts(normals)?.ok_or_else(|| {
            Error::internal("ImageScore::Combined without a localizer (check() requires one)")
        })?;
        let scale = ScoreScale {
            map: Standardiser::fit(&map, "map scores of the normal images")?,
            pooled: Standardiser::fit(&pooled, "pooled scores of the normal images")?,
            source: ScaleSource::HeldOut,
            // the weight depends on the training images only: fit's stays
            pooled_weight,
        };
        self.score_scale = Some(scale);
        self.threshold = None;
        self.calibration = None;
        Ok(scale)
    }

    /// Anomaly score of one image (higher = more anomalous).
    pub fn score(&self, image: &RgbImage) -> Result<f32> {
        Ok(self.score_batch(std::slice::from_ref(image))?[0])
    }

    /// Score and decision for one image. Errors with [`Error::NotFitted`]
    /// ([`Missing::Threshold`](crate::Missing::Threshold)) when no threshold is set.
    pub fn predict(&self, image: &RgbImage) -> Result<Prediction> {
        let t = self.threshold.ok_or_else(|| {
            Error::not_fitted(
                crate::error::Missing::Threshold,
                "call threshold_from_f1, threshold_from_quantile or set_threshold first",
            )
        })?;
        let score = self.score(image)?;
        Ok(Prediction {
            score,
            is_anomalous: score > t,
        })
    }

    /// Scores the test set of `dataset` and computes the image-level metrics.
    pub fn evaluate(&self, dataset: &Dataset) -> Result<Report> {
        if dataset.test.is_empty() {
            return Err(Error::EmptyDataset {
                path: dataset.name.clone().into(),
            });
        }
        let images = self.load_for_scoring(&dataset.test)?;
        let t0 = Instant::now();
        let scores = self.score_batch(&images)?;
        let per_image = t0.elapsed().as_secs_f64() / images.len() as f64;
        let labels: Vec<bool> = dataset.test.iter().map(|s| s.is_anomalous()).collect();
        let types: Vec<String> = dataset.test.iter().map(|s| s.defect_type.clone()).collect();
        let f1 = f1_max(&scores, &labels)?;
        let (pixel_auroc, aupro) = self.pixel_metrics(dataset, &images)?;
        let samples = dataset
            .test
            .iter()
            .zip(&scores)
            .map(|(s, &score)| ScoredSample {
                path: s.path.clone(),
                defect_type: s.defect_type.clone(),
                anomalous: s.is_anomalous(),
                mask: s.mask.clone(),
                score,
                overlay: None,
            })
            .collect();
        Ok(Report {
            category: dataset.name.clone(),
            image_auroc: roc_auc(&scores, &labels)?,
            per_type_auroc: per_type_auroc(&scores, &labels, &types)?,
            f1_max: f1.f1,
            f1_threshold: f1.threshold,
            threshold: self.threshold,
            calibration: self.calibration.clone(),
            pixel_auroc,
            aupro,
            n_train: dataset.train.len(),
            n_test: images.len(),
            fit_seconds: self.fit_time.as_secs_f64(),
            score_ms_per_image: per_image * 1e3,
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            run: self.run_info(),
            samples,
        })
    }
}
