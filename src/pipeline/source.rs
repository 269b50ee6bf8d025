//! The training batches of the self-supervised stage: each step draws `batch_images` source
//! images and turns each into its labelled views with the configured augmentation (PAPER.md,
//! "Training": 32 source images × 2 or 3 views).
use crate::augment::{batch_views, Augmentation};
use crate::data::synthetic::mix;
use crate::error::{Error, Result};
use crate::model::{Batch, BatchSource};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// A [`BatchSource`] of augmented views of a fixed set of normal images; batch `step` is a pure
/// function of `(seed, step)`, so training is reproducible and resumable.
#[derive(Debug, Clone)]
pub struct AugmentSource {
    images: Arc<Vec<RgbImage>>,
    augmentation: Augmentation,
    batch_images: usize,
    seed: u64,
}

impl AugmentSource {
    /// Views of `images` (all of one size) under `augmentation`, `batch_images` sources a step.
    pub fn new(
        images: Arc<Vec<RgbImage>>,
        augmentation: Augmentation,
        batch_images: usize,
        seed: u64,
    ) -> Result<Self> {
        let (w, h) = images.first().map_or((0, 0), |i| i.dimensions());
        check_source(&images, &augmentation, batch_images, "batch_images", (w, h))?;
        Ok(Self {
            images,
            augmentation,
            batch_images,
            seed,
        })
    }
}

impl BatchSource for AugmentSource {
    fn batch(&mut self, step: usize) -> Result<Batch> {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, 2 * step as u64));
        let n = self.images.len();
        let picks: Vec<RgbImage> = (0..self.batch_images)
            .map(|_| self.images[rng.random_range(0..n)].clone())
            .collect();
        views_batch(&self.augmentation, &picks, self.seed, step)
    }

    /// A clone (the images are shared): batches are a pure function of the step.
    fn fork(&self) -> Option<Self> {
        Some(self.clone())
    }
}

/// The argument checks of the training sources ([`AugmentSource`], and the patch model's
/// `PatchSource`): at least one image, `batch_images >= 1` (the parameter named `batch_param` in
/// the error), a valid augmentation that accepts views of `input` = (width, height).
pub(crate) fn check_source(
    images: &[RgbImage],
    augmentation: &Augmentation,
    batch_images: usize,
    batch_param: &str,
    input: (u32, u32),
) -> Result<()> {
    if images.is_empty() {
        return Err(Error::invalid_input(
            "train",
            "no training images were given",
        ));
    }
    if batch_images == 0 {
        return Err(Error::invalid_param(
            batch_param,
            "must be >= 1 (paper: 32)",
        ));
    }
    augmentation.check()?;
    augmentation.check_image(input.0, input.1)
}

/// Batch `step` of a training source from its drawn source images: their labelled views under
/// `augmentation`, seeded by `(seed, step)`.
pub(crate) fn views_batch(
    augmentation: &Augmentation,
    sources: &[RgbImage],
    seed: u64,
    step: usize,
) -> Result<Batch> {
    let views = batch_views(augmentation, sources, mix(seed, 2 * step as u64 + 1))?;
    let labels = views.iter().map(|v| v.label as i64).collect();
    Ok(Batch {
        images: views.into_iter().map(|v| v.image).collect(),
        labels,
    })
}
