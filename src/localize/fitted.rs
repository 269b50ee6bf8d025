//! The fitted [`Localizer`]: patch model + patch Gaussians, and its fit.
use super::features::{grid_side, patch_features};
use super::gaussians::{l2_rows, PatchGaussians};
use super::params::LocalizerParams;
use super::source::PatchSource;
use super::upsample::{resize_bilinear, upsample_scores};
use crate::data::synthetic::mix;
use crate::data::{resize_rgb, Normalization};
use crate::error::{Error, Result};
use crate::heatmap::AnomalyMap;
use crate::model::{train, Classifier, ClassifierConfig, Control};
use crate::pipeline::{DetectorParams, FitEvent};
use image::RgbImage;
use ndarray::{concatenate, Array2, Array3, Axis};
use std::sync::Arc;

/// Seed stream of the patch model (distinct from the image model's).
const PATCH_STREAM: u64 = 0x10CA_112E;

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

impl Localizer {
    /// Trains the patch model on crops of `images` (already `det.input_size()`², normal only)
    /// and fits the patch Gaussians on the dense features of the un-augmented images.
    pub(crate) fn fit(
        lp: &LocalizerParams,
        det: &DetectorParams,
        images: Arc<Vec<RgbImage>>,
        callback: &mut dyn FnMut(&FitEvent) -> Control,
    ) -> Result<Self> {
        let side = det.input_size();
        lp.check(side, det.augmentation_config())?;
        let seed = mix(det.seed, PATCH_STREAM);
        let mut config = ClassifierConfig::new(det.augmentation.num_classes() as i64, det.device);
        config.head = det.head.clone();
        if let Some(f) = det.fast_path {
            config.fast_path = f;
        }
        let mut classifier = Classifier::new(&config, det.device, seed)?;
        let mut source = PatchSource::new(
            images.clone(),
            det.augmentation.clone(),
            lp.crop_size,
            lp.batch_images,
            seed,
        )?;
        let mut training = det.training.clone().steps(lp.steps).seed(seed);
        training.checkpoint = None; // the image model's checkpoint file is not ours
        train(&mut classifier, &mut source, &training, |p| {
            callback(&FitEvent::LocalizerTrain(p.clone()))
        })?;
        let norm = training.normalization;
        let gaussians = fit_gaussians(&classifier, &norm, lp, side, &images, callback)?;
        Ok(Self {
            classifier,
            gaussians,
            params: lp.clone(),
            side,
            normalization: norm,
        })
    }

    /// Refits the dense features and Gaussians with `lp` (e.g. another [`FeatureMode`](super::FeatureMode),
    /// density, patch size or σ) on `images` (already at the input side), keeping the trained
    /// patch model; `lp`'s training fields (`crop_size`, `steps`, `batch_images`) are recorded
    /// but unused. On error the localizer is unchanged.
    pub(crate) fn refit(
        &mut self,
        lp: &LocalizerParams,
        images: &[RgbImage],
        callback: &mut dyn FnMut(&FitEvent) -> Control,
    ) -> Result<()> {
        let g = fit_gaussians(
            &self.classifier,
            &self.normalization,
            lp,
            self.side,
            images,
            callback,
        )?;
        self.gaussians = g;
        self.params = lp.clone();
        Ok(())
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

    /// `[grid², 512]` raw patch features of an image already at the input side.
    fn raw_features(&self, image: &RgbImage) -> Result<Array2<f32>> {
        patch_features(&self.classifier, &self.normalization, image, &self.params)
    }

    /// The `[grid, grid]` patch scores of `image` (resized to the input side first).
    pub fn score_grid(&self, image: &RgbImage) -> Result<Array2<f32>> {
        let img = resize_rgb(image, self.side);
        let scores = self.gaussians.score(&self.raw_features(&img)?)?;
        let g = grid_side(self.side, self.params.patch_size, self.params.stride);
        // [g²] -> [g, g]
        scores
            .into_shape_with_order((g, g))
            .map_err(|e| Error::invalid_param("scores", e.to_string()))
    }

    /// The `[side, side]` map at the input side (before resizing to the image's own size).
    pub fn input_map(&self, image: &RgbImage) -> Result<Array2<f32>> {
        let grid = self.score_grid(image)?;
        let p = &self.params;
        upsample_scores(
            grid.view(),
            p.patch_size as usize,
            p.stride as usize,
            p.sigma,
        )
    }

    /// The anomaly map of `image` at its own size (any aspect ratio), higher = more anomalous.
    /// The patch model's image score is its [`max`](AnomalyMap::max).
    pub fn localize(&self, image: &RgbImage) -> Result<AnomalyMap> {
        let (w, h) = image.dimensions();
        if w == 0 || h == 0 {
            return Err(Error::invalid_param("image", "the image is empty"));
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

    /// The square input side images are resized to.
    pub fn input_side(&self) -> u32 {
        self.side
    }
}

/// PCA on the patches of `pca_images` evenly spaced images, then the Gaussians on all images.
fn fit_gaussians(
    clf: &Classifier,
    norm: &Normalization,
    lp: &LocalizerParams,
    side: u32,
    images: &[RgbImage],
    callback: &mut dyn FnMut(&FitEvent) -> Control,
) -> Result<PatchGaussians> {
    let n = images.len();
    let picks = lp.pca_images.min(n);
    let mut rows = Vec::with_capacity(picks);
    for p in 0..picks {
        let mut f = patch_features(clf, norm, &images[p * n / picks], lp)?;
        l2_rows(&mut f);
        rows.push(f);
    }
    let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
    let all = concatenate(Axis(0), &views)
        .map_err(|e| Error::invalid_param("features", e.to_string()))?;
    let d = lp.pca_dim.min(all.ncols());
    let (mean, proj) = PatchGaussians::fit_pca(all.view(), d)?;
    drop((rows, all));
    let cells = grid_side(side, lp.patch_size, lp.stride).pow(2);
    let mut z = Array3::<f32>::zeros((n, cells, d));
    for (i, img) in images.iter().enumerate() {
        let raw = patch_features(clf, norm, img, lp)?;
        z.index_axis_mut(Axis(0), i)
            .assign(&PatchGaussians::project_with(&mean, &proj, &raw));
        callback(&FitEvent::LocalizerFeatures {
            done: i + 1,
            total: n,
        });
    }
    PatchGaussians::fit(lp.density, mean, proj, z.view())
}
