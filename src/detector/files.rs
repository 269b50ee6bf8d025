//! Scoring image files as they come: batched, with a per-file result so one unreadable file does
//! not stop the others.
use super::{Detector, SCORE_BATCH};
use crate::data::{load_rgb, resize_rgb};
use crate::error::Result;
use image::RgbImage;
use std::path::PathBuf;

impl Detector {
    /// Scores image files (any size; resized like training images), [`SCORE_BATCH`] at a time.
    /// Returns one result per path, in order: a file that cannot be read or decoded gets its
    /// typed error and the rest are still scored. `progress(done)` is called after each batch.
    /// A batch's files are decoded and resized in parallel (feature `parallel`), each straight to
    /// the size the score uses, so full-size images are never held for the whole batch.
    pub fn score_files(
        &self,
        paths: &[PathBuf],
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<Result<f32>>> {
        let resize = self.file_resizer();
        let mut out: Vec<Result<f32>> = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(SCORE_BATCH) {
            // Decoded images go to one batch; each slot remembers whether it got one.
            let mut images: Vec<RgbImage> = Vec::with_capacity(chunk.len());
            let slots: Vec<Option<crate::Error>> = decode_each(chunk, &|i| resize.apply(&i))
                .into_iter()
                .map(|r| match r {
                    Ok(img) => {
                        images.push(img);
                        None
                    }
                    Err(e) => Some(e),
                })
                .collect();
            let mut scores = self.score_batch(&images)?.into_iter();
            for slot in slots {
                out.push(match slot {
                    None => Ok(scores.next().unwrap_or(f32::NAN)),
                    Some(e) => Err(e),
                });
            }
            progress(out.len());
        }
        Ok(out)
    }

    /// How images are resized for the image score ([`prepare`](Self::prepare) and
    /// [`score_files`](Self::score_files)), without the detector's tensors, so other threads can
    /// use it.
    pub(super) fn file_resizer(&self) -> FileResize {
        match self.map_scored() {
            Some(loc) => FileResize::Working(loc.params().clone(), loc.input_side()),
            None => FileResize::Square(self.params.input_size()),
        }
    }
}

/// The resize of the image score, without the detector (whose tensors are not `Sync`).
pub(super) enum FileResize {
    /// To the localizer's working size for an input side.
    Working(crate::localize::LocalizerParams, u32),
    /// To a square side.
    Square(u32),
}

impl FileResize {
    pub(super) fn apply(&self, image: &RgbImage) -> RgbImage {
        match self {
            FileResize::Working(lp, side) => crate::localize::prepare_image(lp, *side, image),
            FileResize::Square(side) => resize_rgb(image, *side),
        }
    }
}

/// Each file decoded (RGB8) and passed through `f`, in order; in parallel with `parallel`.
fn decode_each<F>(paths: &[PathBuf], f: &F) -> Vec<Result<RgbImage>>
where
    F: Fn(RgbImage) -> RgbImage + Sync,
{
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        paths.par_iter().map(|p| load_rgb(p).map(f)).collect()
    }
    #[cfg(not(feature = "parallel"))]
    {
        paths.iter().map(|p| load_rgb(p).map(f)).collect()
    }
}
