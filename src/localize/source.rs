//! Training batches of the patch model (PAPER.md "Localization": the same network trained on
//! random 64×64 crops, CutPaste applied inside the crop).
use crate::augment::Augmentation;
use crate::data::synthetic::mix;
use crate::error::{Error, Result};
use crate::model::{Batch, BatchSource};
use crate::pipeline::{check_source, views_batch};
use image::{imageops, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// A [`BatchSource`] of augmented views of random `crop`² crops of a fixed set of normal
/// images (of any sizes of at least `crop` per side): each step draws `batch_images` (image, crop position) pairs, then
/// the augmentation turns each crop into its labelled views. Batch `step` is a pure function of
/// `(seed, step)`.
#[derive(Debug, Clone)]
pub struct PatchSource {
    images: Arc<Vec<RgbImage>>,
    augmentation: Augmentation,
    crop: u32,
    batch_images: usize,
    seed: u64,
}

impl PatchSource {
    /// Crops of side `crop` from `images` under `augmentation`, `batch_images` crops a step.
    pub fn new(
        images: Arc<Vec<RgbImage>>,
        augmentation: Augmentation,
        crop: u32,
        batch_images: usize,
        seed: u64,
    ) -> Result<Self> {
        // with no images, check_source reports that
        if let Some(short) = images.iter().map(|i| i.width().min(i.height())).min() {
            if crop == 0 || crop > short {
                return Err(Error::invalid_param(
                    "localizer.crop_size",
                    format!("must be in 1..={short} (the shortest image side), got {crop}"),
                ));
            }
        }
        check_source(
            &images,
            &augmentation,
            batch_images,
            "localizer.batch_images",
            (crop, crop),
        )?;
        Ok(Self {
            images,
            augmentation,
            crop,
            batch_images,
            seed,
        })
    }

    /// The crops of step `step` before augmentation (for inspection and tests).
    pub fn crops(&self, step: usize) -> Vec<RgbImage> {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, 2 * step as u64));
        (0..self.batch_images)
            .map(|_| {
                let img = &self.images[rng.random_range(0..self.images.len())];
                let (w, h) = img.dimensions();
                let x = rng.random_range(0..=w - self.crop);
                let y = rng.random_range(0..=h - self.crop);
                imageops::crop_imm(img, x, y, self.crop, self.crop).to_image()
            })
            .collect()
    }
}

impl BatchSource for PatchSource {
    fn batch(&mut self, step: usize) -> Result<Batch> {
        views_batch(&self.augmentation, &self.crops(step), self.seed, step)
    }

    /// A clone (the images are shared): batches are a pure function of the step.
    fn fork(&self) -> Option<Self> {
        Some(self.clone())
    }
}
