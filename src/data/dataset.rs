//! Datasets of normal training images and labelled test images: the MVTec AD layout and plain
//! folders.
//!
//! MVTec AD layout (`<category>/…`):
//! ```text
//! train/good/*.png                         defect-free training images
//! test/good/*.png                          defect-free test images (no mask)
//! test/<defect_type>/*.png                 defective test images
//! ground_truth/<defect_type>/<stem>_mask.png   their pixel masks (same size as the image)
//! ```
//! Listing is sorted by file name and therefore stable; non-image files are ignored.
use super::image_io::{self, is_image_file};
use crate::error::{Error, Result};
use image::{GrayImage, RgbImage};
use std::path::{Path, PathBuf};

/// The defect type name of defect-free samples.
pub const GOOD: &str = "good";

/// One image of a dataset with its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The image file.
    pub path: PathBuf,
    /// `"good"` for normal samples, otherwise the defect type (the folder name).
    pub defect_type: String,
    /// The ground-truth mask file, when there is one (never for good samples).
    pub mask: Option<PathBuf>,
}

impl Sample {
    /// True for defective samples (anything not `"good"`).
    pub fn is_anomalous(&self) -> bool {
        self.defect_type != GOOD
    }

    /// Loads the image as RGB8 resized to `side`×`side`.
    pub fn load(&self, side: u32) -> Result<RgbImage> {
        image_io::load_rgb_resized(&self.path, side)
    }

    /// Loads the mask resized to `side`×`side` (binary 0/255). Good samples get an all-zero mask;
    /// a defect sample without a mask file gets `None` (image-level-only data).
    pub fn load_mask(&self, side: u32) -> Result<Option<GrayImage>> {
        match (&self.mask, self.is_anomalous()) {
            (Some(m), _) => Ok(Some(image_io::resize_mask(&image_io::load_mask(m)?, side))),
            (None, false) => Ok(Some(GrayImage::new(side, side))),
            (None, true) => Ok(None),
        }
    }
}

/// Options of the MVTec-layout reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MvtecOptions {
    /// Accept defect images without a mask (image-level-only data such as ELPV). Default: false,
    /// so a missing mask is reported as [`Error::MissingMask`].
    pub allow_missing_masks: bool,
}

/// A dataset: normal training images and labelled test images.
///
/// Built by [`Dataset::mvtec`] (MVTec AD layout) or [`FolderDataset::open`] (plain folders).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// A name for reports (the category folder's name for MVTec).
    pub name: String,
    /// Defect-free training samples, sorted by path.
    pub train: Vec<Sample>,
    /// Test samples: good first, then defect types in name order, each sorted by path.
    pub test: Vec<Sample>,
}

/// The MVTec AD category type used throughout the crate (a [`Dataset`]).
pub type MvtecCategory = Dataset;

impl Dataset {
    /// Opens an MVTec-layout category folder, requiring a mask for every defect image.
    pub fn mvtec(root: impl AsRef<Path>) -> Result<Dataset> {
        Self::mvtec_with(root, MvtecOptions::default())
    }

    /// Opens an MVTec-layout category folder with options.
    ///
    /// Errors: [`Error::EmptyDataset`] when `train/good` is missing or has no images,
    /// [`Error::MissingMask`] for a defect image without `ground_truth/<type>/<stem>_mask.*`
    /// (unless allowed), [`Error::MaskMismatch`] when a mask's size differs from its image's.
    pub fn mvtec_with(root: impl AsRef<Path>, opts: MvtecOptions) -> Result<Dataset> {
        let root = root.as_ref();
        let train_dir = root.join("train").join(GOOD);
        let train = samples_in(&train_dir, GOOD)?;
        if train.is_empty() {
            return Err(Error::EmptyDataset { path: train_dir });
        }
        let mut test = Vec::new();
        let test_dir = root.join("test");
        if test_dir.is_dir() {
            for ty in sorted_subdirs(&test_dir)? {
                let mut samples = samples_in(&test_dir.join(&ty), &ty)?;
                if ty != GOOD {
                    let gt = root.join("ground_truth").join(&ty);
                    for s in &mut samples {
                        s.mask = find_mask(&gt, &s.path);
                        check_mask(s, &gt, opts)?;
                    }
                }
                test.push((ty, samples));
            }
        }
        // good first, then defect types by name
        test.sort_by_key(|(ty, _)| (ty != GOOD, ty.clone()));
        Ok(Dataset {
            name: dir_name(root),
            train,
            test: test.into_iter().flat_map(|(_, s)| s).collect(),
        })
    }

    /// Defect type names present in the test set, sorted (without `"good"`).
    pub fn defect_types(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .test
            .iter()
            .filter(|s| s.is_anomalous())
            .map(|s| s.defect_type.clone())
            .collect();
        t.dedup();
        t.sort();
        t.dedup();
        t
    }

    /// True when every defective test sample has a mask (pixel-level evaluation possible).
    pub fn has_masks(&self) -> bool {
        self.test
            .iter()
            .filter(|s| s.is_anomalous())
            .all(|s| s.mask.is_some())
    }

    /// Loads all training images at `side`×`side` (in parallel with the `parallel` feature).
    pub fn load_train(&self, side: u32) -> Result<Vec<RgbImage>> {
        load_all(&self.train, side)
    }

    /// Loads all test images at `side`×`side`.
    pub fn load_test(&self, side: u32) -> Result<Vec<RgbImage>> {
        load_all(&self.test, side)
    }
}

/// Loads the images of `samples` at their own sizes, in order (in parallel with `parallel`).
pub fn load_all_native(samples: &[Sample]) -> Result<Vec<RgbImage>> {
    load_all_with(samples, |img| img)
}

/// Loads the images of `samples` at their own sizes and maps each through `f` (e.g. a resize),
/// in order, so only the mapped images are held at once.
pub fn load_all_with<F>(samples: &[Sample], f: F) -> Result<Vec<RgbImage>>
where
    F: Fn(RgbImage) -> RgbImage + Sync,
{
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        samples
            .par_iter()
            .map(|s| image_io::load_rgb(&s.path).map(&f))
            .collect()
    }
    #[cfg(not(feature = "parallel"))]
    {
        samples
            .iter()
            .map(|s| image_io::load_rgb(&s.path).map(&f))
            .collect()
    }
}

/// Loads the images of `samples` at `side`×`side`, in order.
pub fn load_all(samples: &[Sample], side: u32) -> Result<Vec<RgbImage>> {
    image_io::check_side(side)?;
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        samples.par_iter().map(|s| s.load(side)).collect()
    }
    #[cfg(not(feature = "parallel"))]
    {
        samples.iter().map(|s| s.load(side)).collect()
    }
}

fn check_mask(s: &Sample, gt: &Path, opts: MvtecOptions) -> Result<()> {
    let Some(mask) = &s.mask else {
        if opts.allow_missing_masks {
            return Ok(());
        }
        return Err(Error::MissingMask {
            image: s.path.clone(),
            expected: gt.join(format!("{}_mask.png", stem(&s.path))),
        });
    };
    let (iw, ih) = image_io::image_size(&s.path)?;
    let (mw, mh) = image_io::image_size(mask)?;
    if (iw, ih) != (mw, mh) {
        return Err(Error::MaskMismatch {
            mask: mask.clone(),
            image: s.path.clone(),
            mask_width: mw,
            mask_height: mh,
            image_width: iw,
            image_height: ih,
        });
    }
    Ok(())
}

/// Looks for `<stem>_mask.<ext>` (MVTec) or `<stem>.<ext>` in `dir`.
pub(crate) fn find_mask(dir: &Path, image: &Path) -> Option<PathBuf> {
    let stem = stem(image);
    let entries = list_images(dir).ok()?;
    let by = |name: &str| entries.iter().find(|p| stem_of(p) == name).cloned();
    by(&format!("{stem}_mask")).or_else(|| by(&stem))
}

/// Image files directly in `dir` as samples of type `ty`; a missing folder gives no samples.
pub(crate) fn samples_in(dir: &Path, ty: &str) -> Result<Vec<Sample>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    Ok(list_images(dir)?
        .into_iter()
        .map(|path| Sample {
            path,
            defect_type: ty.to_string(),
            mask: None,
        })
        .collect())
}

/// Expands `inputs` into image files: a file is kept as given (whatever its extension; loading
/// reports what is wrong with it), a folder contributes the image files directly inside it,
/// sorted. Errors when an input does not exist, a folder cannot be read, or a folder holds no
/// image file ([`Error::EmptyDataset`] naming it: in a pipeline, an empty folder is a mistake
/// upstream, not a pass).
pub fn collect_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let found = list_images(p)?;
            if found.is_empty() {
                return Err(Error::EmptyDataset { path: p.clone() });
            }
            out.extend(found);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(Error::io(
                p,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such file or folder; give image files or folders of images",
                ),
            ));
        }
    }
    Ok(out)
}

/// Sorted image files directly inside `dir`.
pub(crate) fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let p = entry.map_err(|e| Error::io(dir, e))?.path();
        if is_image_file(&p) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn sorted_subdirs(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let p = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = dir_name(&p);
        if p.is_dir() && !name.starts_with('.') {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

fn stem(p: &Path) -> String {
    stem_of(p)
}

fn stem_of(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn dir_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// A dataset from plain folders: one folder of good images for training, optionally a folder of
/// good test images, folders of defect images (the folder name becomes the defect type) and a
/// folder of masks (`<stem>_mask.*` or `<stem>.*`).
///
/// ```no_run
/// use cutpaste::data::FolderDataset;
/// let ds = FolderDataset::new("parts/ok")
///     .test_good("parts/ok_holdout")
///     .defects("parts/scratched")
///     .masks("parts/masks")
///     .open()?;
/// # Ok::<(), cutpaste::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct FolderDataset {
    good: PathBuf,
    test_good: Option<PathBuf>,
    defects: Vec<PathBuf>,
    masks: Option<PathBuf>,
    allow_missing_masks: bool,
}

impl FolderDataset {
    /// Starts a folder dataset whose training images are the images in `good`.
    pub fn new(good: impl Into<PathBuf>) -> Self {
        FolderDataset {
            good: good.into(),
            allow_missing_masks: true,
            ..Default::default()
        }
    }
    /// Adds a folder of good test images.
    pub fn test_good(mut self, dir: impl Into<PathBuf>) -> Self {
        self.test_good = Some(dir.into());
        self
    }
    /// Adds a folder of defect test images; its name is the defect type.
    pub fn defects(mut self, dir: impl Into<PathBuf>) -> Self {
        self.defects.push(dir.into());
        self
    }
    /// Sets the folder holding masks of the defect images.
    pub fn masks(mut self, dir: impl Into<PathBuf>) -> Self {
        self.masks = Some(dir.into());
        self
    }
    /// Requires a mask for every defect image (default: masks optional).
    pub fn require_masks(mut self, yes: bool) -> Self {
        self.allow_missing_masks = !yes;
        self
    }

    /// Lists the folders. Errors as [`Dataset::mvtec_with`]; a defect folder that does not exist
    /// is an [`Error::Io`].
    pub fn open(&self) -> Result<Dataset> {
        let train = samples_in(&self.good, GOOD)?;
        if train.is_empty() {
            return Err(Error::EmptyDataset {
                path: self.good.clone(),
            });
        }
        let mut test = match &self.test_good {
            Some(d) => list_images(d)?.into_iter().map(good).collect(),
            None => Vec::new(),
        };
        let opts = MvtecOptions {
            allow_missing_masks: self.allow_missing_masks,
        };
        for dir in &self.defects {
            let ty = dir_name(dir);
            for path in list_images(dir)? {
                let mask = self.masks.as_deref().and_then(|m| find_mask(m, &path));
                let s = Sample {
                    path,
                    defect_type: ty.clone(),
                    mask,
                };
                check_mask(&s, self.masks.as_deref().unwrap_or(dir), opts)?;
                test.push(s);
            }
        }
        Ok(Dataset {
            name: dir_name(&self.good),
            train,
            test,
        })
    }
}

fn good(path: PathBuf) -> Sample {
    Sample {
        path,
        defect_type: GOOD.into(),
        mask: None,
    }
}
