//! Views for a batch of images, in parallel with rayon when the `parallel` feature is on.
//!
//! Image `i` gets the seed [`image_seed`]`(base_seed, i)` and its views come from
//! [`Augmentation::views`] with that seed, so the output never depends on the number of threads
//! (or on whether `parallel` is enabled).
use image::RgbImage;

use super::labels::{Augmentation, View};
use crate::Result;

/// The seed of image `index` in a batch with `base_seed`: a SplitMix64 mix of both, so nearby
/// base seeds and indices give unrelated streams.
pub fn image_seed(base_seed: u64, index: usize) -> u64 {
    splitmix64(base_seed ^ splitmix64(index as u64 ^ 0x6A09_E667_F3BC_C908))
}

/// SplitMix64 finaliser (Steele, Lea & Flood 2014).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// All views of all `images`, image-major then view order (`images.len() ·
/// aug.views_per_image()` views). Parallel over images when the `parallel` feature is on
/// (in rayon's current pool: use `ThreadPool::install` to bound the threads); the output is
/// identical for any thread count.
///
/// Errors: as [`Augmentation::views`]; parameters and every image size are checked before any
/// work starts, and the first offending image (lowest index) is reported.
pub fn batch_views(aug: &Augmentation, images: &[RgbImage], base_seed: u64) -> Result<Vec<View>> {
    aug.check()?;
    for image in images {
        aug.check_image(image.width(), image.height())?;
    }
    let per_image =
        |(i, image): (usize, &RgbImage)| aug.views_checked(image, image_seed(base_seed, i));
    #[cfg(feature = "parallel")]
    let nested: Vec<Vec<View>> = {
        use rayon::prelude::*;
        images.par_iter().enumerate().map(per_image).collect()
    };
    #[cfg(not(feature = "parallel"))]
    let nested: Vec<Vec<View>> = images.iter().enumerate().map(per_image).collect();
    Ok(nested.into_iter().flatten().collect())
}
