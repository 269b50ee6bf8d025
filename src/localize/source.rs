//! Training batches of the patch model (PAPER.md "Localization": the same network trained on
//! random 64×64 crops, CutPaste applied inside the crop).
use crate::augment::{batch_views, Augmentation};
use crate::data::synthetic::mix;
use crate::error::{Error, Result};
use crate::model::{Batch, BatchSource};
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
        let Some(first) = images.first() else {
            return Err(Error::invalid_input(
                "train",
                "no training images were given",
            ));
        };
        let short = images
            .iter()
            .map(|i| i.width().min(i.height()))
            .min()
            .unwrap_or(first.width());
        if crop == 0 || crop > short {
            return Err(Error::invalid_param(
                "localizer.crop_size",
                format!("must be in 1..={short} (the shortest image side), got {crop}"),
            ));
        }
        if batch_images == 0 {
            return Err(Error::invalid_param(
                "localizer.batch_images",
                "must be >= 1 (paper: 32)",
            ));
        }
        augmentation.check()?;
        augmentation.check_image(crop, crop)?;
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
        let crops = self.crops(step);
        let views = batch_views(
            &self.augmentation,
            &crops,
            mix(self.seed, 2 * step as u64 + 1),
        )?;
        let labels = views.iter().map(|v| v.label as i64).collect();
        Ok(Batch {
            images: views.into_iter().map(|v| v.image).collect(),
            labels,
        })
    }

    /// A clone (the images are shared): batches are a pure function of the step.
    fn fork(&self) -> Option<Self> {
        Some(self.clone())
    }
}
