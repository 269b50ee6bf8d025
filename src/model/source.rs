//! Where training batches come from: the [`BatchSource`] trait (a pure function of the step), and
//! `ToySource`, a toy task for the crate's own tests, examples and benchmarks (hidden from the
//! public API). How batches reach the network: [`Prefetch`](super::Prefetch).
use crate::error::{Error, Result};
use image::{imageops, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;

/// One training batch: augmented views and their class labels (`0..num_classes`), all images of
/// one size.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// The views (e.g. 32 source images × 3 views for the 3-way task).
    pub images: Vec<RgbImage>,
    /// Class label of each view, in `0..num_classes`.
    pub labels: Vec<i64>,
}

/// Produces the batch for a training step. Must be a pure function of `step` (and the source's
/// own seed) for training to be reproducible and resumable: resuming at step `s` asks for
/// batches `s, s+1, …` again.
///
/// Runs on a background thread (hence `Send`). Closures `FnMut(usize) -> Result<Batch>`
/// implement it.
pub trait BatchSource: Send {
    /// The batch for 0-based step `step`.
    fn batch(&mut self, step: usize) -> Result<Batch>;

    /// An independent copy giving the same batches, so several [`Prefetch::workers`](super::Prefetch::workers) can
    /// prepare steps in parallel. `None` (the default, e.g. for closures) keeps the source on
    /// one thread whatever the worker count.
    fn fork(&self) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }
}

impl<F: FnMut(usize) -> Result<Batch> + Send> BatchSource for F {
    fn batch(&mut self, step: usize) -> Result<Batch> {
        self(step)
    }
}

/// **Not public API** (hidden from the documentation, no stability promise): a toy task for the
/// crate's own tests and benchmarks (the training benchmark's PyTorch reference mirrors it),
/// standing in for the real augmentations, which train through
/// [`AugmentSource`](crate::pipeline::AugmentSource) and [`Augmentation`](crate::augment::Augmentation).
///
/// label 0 is a source image as is, label 1 the same image with a rectangle cut from it and
/// pasted elsewhere (CutPaste without colour jitter; area 2–15 % of the image, aspect ratio
/// log-uniform in [0.3, 3.3]) and, with [`ToySource::three_way`], label 2 the image with a thin
/// unrotated strip (2–16 × 10–25 px) cut and pasted (Scar without rotation or jitter). Each step
/// draws `batch_images` source images, so a batch has 2 (or 3) × `batch_images` views.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct ToySource {
    images: Vec<RgbImage>,
    batch_images: usize,
    seed: u64,
    three_way: bool,
}

impl ToySource {
    /// `images`: same-size source images (≥ 8×8); `batch_images` ≥ 1 of them per step.
    pub fn new(images: Vec<RgbImage>, batch_images: usize, seed: u64) -> Result<Self> {
        let Some(first) = images.first() else {
            return Err(Error::EmptyDataset {
                path: PathBuf::from("<in-memory training images>"),
            });
        };
        if batch_images == 0 {
            return Err(Error::invalid_param("batch_images", "must be >= 1"));
        }
        let (w, h) = first.dimensions();
        if w < 8 || h < 8 {
            return Err(Error::ImageTooSmall {
                width: w,
                height: h,
                min: 8,
                what: "toy cut-paste".into(),
            });
        }
        if let Some(i) = images.iter().position(|im| im.dimensions() != (w, h)) {
            return Err(Error::invalid_input(
                "images",
                format!("image {i} is not {w}x{h} like image 0; resize all images to one size"),
            ));
        }
        Ok(Self {
            images,
            batch_images,
            seed,
            three_way: false,
        })
    }

    /// Adds the third, scar-like class (labels 0, 1, 2: the 3-way task's batch shape).
    pub fn three_way(mut self) -> Self {
        self.three_way = true;
        self
    }

    /// Number of classes of the labels it produces (2, or 3 with [`Self::three_way`]).
    pub fn num_classes(&self) -> i64 {
        if self.three_way {
            3
        } else {
            2
        }
    }

    /// `n` synthetic `size`×`size` images: smooth colour gradients with a few blobs, seeded.
    pub fn synthetic_images(n: usize, size: u32, seed: u64) -> Vec<RgbImage> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let base: [f32; 3] = std::array::from_fn(|_| rng.random_range(40.0..200.0));
                let (gx, gy) = (
                    rng.random_range(-1.0..1.0f32),
                    rng.random_range(-1.0..1.0f32),
                );
                let s = size as f32;
                RgbImage::from_fn(size, size, |x, y| {
                    let v = 40.0 * (gx * x as f32 / s + gy * y as f32 / s);
                    image::Rgb(std::array::from_fn(|c| {
                        (base[c] + v).clamp(0.0, 255.0) as u8
                    }))
                })
            })
            .collect()
    }

    /// Cuts a random rectangle from `img` and pastes it at another random place (in place):
    /// CutPaste-sized, or a thin scar-sized strip when `scar`.
    fn cut_paste(img: &mut RgbImage, rng: &mut ChaCha8Rng, scar: bool) {
        let (w, h) = img.dimensions();
        let (pw, ph) = if scar {
            let (a, b) = (rng.random_range(2..=16u32), rng.random_range(10..=25u32));
            if rng.random::<bool>() {
                (a, b)
            } else {
                (b, a)
            }
        } else {
            let area = rng.random_range(0.02..0.15) * (w * h) as f64;
            let aspect = (rng.random_range(0.3f64.ln()..(1.0f64 / 0.3).ln())).exp();
            let pw = (area * aspect).sqrt().round() as u32;
            (pw, (area / aspect).sqrt().round() as u32)
        };
        let (pw, ph) = (pw.clamp(1, w - 1), ph.clamp(1, h - 1));
        let (sx, sy) = (rng.random_range(0..=w - pw), rng.random_range(0..=h - ph));
        let (dx, dy) = (rng.random_range(0..=w - pw), rng.random_range(0..=h - ph));
        let patch = imageops::crop_imm(img, sx, sy, pw, ph).to_image();
        imageops::replace(img, &patch, dx as i64, dy as i64);
    }
}

impl BatchSource for ToySource {
    fn batch(&mut self, step: usize) -> Result<Batch> {
        // One independent stream per step: batches do not depend on which steps ran before.
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(step as u64);
        let mut batch = Batch::default();
        for _ in 0..self.batch_images {
            let img = &self.images[rng.random_range(0..self.images.len())];
            let mut cp = img.clone();
            Self::cut_paste(&mut cp, &mut rng, false);
            batch.images.extend([img.clone(), cp]);
            batch.labels.extend([0, 1]);
            if self.three_way {
                let mut scar = img.clone();
                Self::cut_paste(&mut scar, &mut rng, true);
                batch.images.push(scar);
                batch.labels.push(2);
            }
        }
        Ok(batch)
    }

    fn fork(&self) -> Option<Self> {
        Some(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toy_batches_are_pure_functions_of_step_and_differ_between_labels() {
        let imgs = ToySource::synthetic_images(3, 32, 1);
        let mut a = ToySource::new(imgs.clone(), 4, 9).unwrap();
        let mut b = ToySource::new(imgs, 4, 9).unwrap();
        let (a5, _) = (a.batch(5).unwrap(), a.batch(6).unwrap());
        let b5 = b.batch(5).unwrap();
        assert_eq!(a5.images, b5.images);
        assert_eq!(a5.labels, vec![0, 1, 0, 1, 0, 1, 0, 1]);
        assert_ne!(a.batch(7).unwrap().images, a5.images);
        let mut three = a.clone().three_way();
        assert_eq!(three.num_classes(), 3);
        assert_eq!(three.batch(0).unwrap().labels, [0, 1, 2].repeat(4));
        // Most pasted views differ from their source (a paste onto itself is possible but rare).
        let changed = a5.images.chunks(2).filter(|p| p[0] != p[1]).count();
        assert!(changed >= 3, "{changed}");
    }

    #[test]
    fn bad_sources_are_typed_errors() {
        assert!(matches!(
            ToySource::new(vec![], 4, 0),
            Err(Error::EmptyDataset { .. })
        ));
        assert!(matches!(
            ToySource::new(ToySource::synthetic_images(1, 8, 0), 0, 0),
            Err(Error::InvalidParam { .. })
        ));
    }
}
