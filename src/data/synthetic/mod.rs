//! The embedded synthetic dataset: procedural, deterministic by seed, written in the MVTec AD
//! layout with exact pixel masks. No files are shipped with the crate.
//!
//! Two kinds of defect-free images:
//! - [`SyntheticKind::Weave`]: a woven texture (a "texture" category like MVTec's carpet),
//! - [`SyntheticKind::Part`]: an aligned turned part on a background (an "object" category like
//!   MVTec's bottle).
//!
//! Test images carry local defects — scratches, holes, stains, contamination, and for the part
//! also missing pieces — whose footprints are written to `ground_truth/<type>/<stem>_mask.png`.
//!
//! ```no_run
//! use cutpaste::data::{synthetic::{SyntheticKind, SyntheticSpec}, Dataset};
//! let dir = SyntheticSpec::new(SyntheticKind::Part).seed(7).write("out/synthetic")?;
//! let ds = Dataset::mvtec(&dir)?; // 64 train, 20 good + 20 defect test images, with masks
//! # Ok::<(), cutpaste::Error>(())
//! ```
mod defects;
mod surfaces;

pub use defects::DefectKind;

use super::image_io::{save_atomic, DEFAULT_SIDE};
use crate::error::{Error, Result};
use image::{GrayImage, RgbImage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Marker file identifying a folder written by [`SyntheticSpec::write`]; only such folders are
/// ever replaced.
pub const MARKER: &str = ".cutpaste-synthetic.json";

/// Which kind of surface the synthetic category shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyntheticKind {
    /// Woven texture (texture category).
    Weave,
    /// Centred turned part on a background (aligned object category).
    Part,
}

impl SyntheticKind {
    /// The category folder name: `synthetic_weave` or `synthetic_part`.
    pub fn category(self) -> &'static str {
        match self {
            SyntheticKind::Weave => "synthetic_weave",
            SyntheticKind::Part => "synthetic_part",
        }
    }

    /// The defect types drawn on this kind, in round-robin order.
    pub fn defect_kinds(self) -> &'static [DefectKind] {
        match self {
            SyntheticKind::Weave => &[
                DefectKind::Scratch,
                DefectKind::Hole,
                DefectKind::Stain,
                DefectKind::Contamination,
            ],
            SyntheticKind::Part => &[
                DefectKind::Scratch,
                DefectKind::Missing,
                DefectKind::Stain,
                DefectKind::Contamination,
            ],
        }
    }
}

/// Sizes, counts and seed of a synthetic category. Defaults: 256², 64 train, 20 good and 20
/// defect test images, seed 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticSpec {
    /// Surface kind.
    pub kind: SyntheticKind,
    /// Square image side in pixels (≥ 32).
    pub side: u32,
    /// Number of defect-free training images.
    pub n_train: usize,
    /// Number of defect-free test images.
    pub n_test_good: usize,
    /// Number of defective test images (spread round-robin over the defect types).
    pub n_test_defect: usize,
    /// Seed: the same spec writes byte-identical files.
    pub seed: u64,
}

/// One generated defective sample: the clean image it was drawn on, the defective image, the
/// mask (255 on the defect) and the defect kind.
#[derive(Debug, Clone)]
pub struct DefectSample {
    /// The defect-free image the defect was drawn on.
    pub clean: RgbImage,
    /// The defective image.
    pub image: RgbImage,
    /// Binary mask of the defect (255 = defect).
    pub mask: GrayImage,
    /// The kind of defect.
    pub kind: DefectKind,
}

const SPLIT_TRAIN: u64 = 1;
const SPLIT_TEST_GOOD: u64 = 2;
const SPLIT_DEFECT: u64 = 3;

impl SyntheticSpec {
    /// The default spec for `kind`.
    pub fn new(kind: SyntheticKind) -> Self {
        SyntheticSpec {
            kind,
            side: DEFAULT_SIDE,
            n_train: 64,
            n_test_good: 20,
            n_test_defect: 20,
            seed: 0,
        }
    }
    /// Sets the image side.
    pub fn side(mut self, side: u32) -> Self {
        self.side = side;
        self
    }
    /// Sets the image counts (train, test good, test defect).
    pub fn counts(mut self, n_train: usize, n_test_good: usize, n_test_defect: usize) -> Self {
        (self.n_train, self.n_test_good, self.n_test_defect) =
            (n_train, n_test_good, n_test_defect);
        self
    }
    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Validates the spec.
    pub fn check(&self) -> Result<()> {
        if self.side < 32 {
            return Err(Error::invalid_param(
                "side",
                format!(
                    "synthetic images need a side of at least 32 px, got {}",
                    self.side
                ),
            ));
        }
        if self.n_train == 0 {
            return Err(Error::invalid_param("n_train", "must be at least 1"));
        }
        Ok(())
    }

    fn rng(&self, split: u64, index: usize) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(mix(mix(self.seed, split), index as u64))
    }

    fn clean(&self, rng: &mut ChaCha8Rng) -> (RgbImage, defects::Region, Option<Vec<f32>>) {
        match self.kind {
            SyntheticKind::Weave => (
                surfaces::weave(self.side, rng),
                defects::Region::Anywhere,
                None,
            ),
            SyntheticKind::Part => {
                let (img, part, noise) = surfaces::part(self.side, rng);
                (img, defects::Region::OnPart(part), Some(noise))
            }
        }
    }

    /// The `index`-th defect-free training image.
    pub fn train_image(&self, index: usize) -> RgbImage {
        self.clean(&mut self.rng(SPLIT_TRAIN, index)).0
    }

    /// The `index`-th defect-free test image.
    pub fn test_good_image(&self, index: usize) -> RgbImage {
        self.clean(&mut self.rng(SPLIT_TEST_GOOD, index)).0
    }

    /// The `index`-th defective test sample (defect kinds cycle through
    /// [`SyntheticKind::defect_kinds`]).
    pub fn defect_sample(&self, index: usize) -> DefectSample {
        let kinds = self.kind.defect_kinds();
        let kind = kinds[index % kinds.len()];
        let mut rng = self.rng(SPLIT_DEFECT, index);
        let (clean, region, noise) = self.clean(&mut rng);
        let mut image = clean.clone();
        let mask = defects::draw(kind, &mut image, &region, noise.as_deref(), &mut rng);
        DefectSample {
            clean,
            image,
            mask,
            kind,
        }
    }

    /// Writes the category to `<root>/<kind.category()>` in the MVTec layout and returns that
    /// folder. A previous synthetic category there (recognised by its [`MARKER`] file) is
    /// replaced; any other existing folder is left untouched and reported as an error.
    pub fn write(&self, root: impl AsRef<Path>) -> Result<PathBuf> {
        self.check()?;
        let dir = root.as_ref().join(self.kind.category());
        prepare_dir(&dir)?;
        let png =
            |sub: &str, i: usize, suffix: &str| dir.join(sub).join(format!("{i:03}{suffix}.png"));
        for i in 0..self.n_train {
            save_atomic(&self.train_image(i), png("train/good", i, ""))?;
        }
        for i in 0..self.n_test_good {
            save_atomic(&self.test_good_image(i), png("test/good", i, ""))?;
        }
        for i in 0..self.n_test_defect {
            let s = self.defect_sample(i);
            let ty = s.kind.name();
            for sub in [format!("test/{ty}"), format!("ground_truth/{ty}")] {
                std::fs::create_dir_all(dir.join(&sub))
                    .map_err(|e| Error::io(dir.join(&sub), e))?;
            }
            save_atomic(&s.image, png(&format!("test/{ty}"), i, ""))?;
            save_atomic(&s.mask, png(&format!("ground_truth/{ty}"), i, "_mask"))?;
        }
        let meta = serde_json::to_string_pretty(self).map_err(|e| Error::io(&dir, e.into()))?;
        std::fs::write(dir.join(MARKER), meta).map_err(|e| Error::io(dir.join(MARKER), e))?;
        Ok(dir)
    }
}

fn prepare_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        if !dir.join(MARKER).is_file() {
            return Err(Error::invalid_param(
                "root",
                format!(
                    "{} exists and was not written by the synthetic generator; choose another root \
                     or remove it yourself",
                    dir.display()
                ),
            ));
        }
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    for sub in ["train/good", "test/good", "ground_truth"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| Error::io(dir.join(sub), e))?;
    }
    Ok(())
}

/// SplitMix64-style mixing of a seed with a stream number.
pub(crate) fn mix(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
