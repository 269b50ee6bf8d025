//! Scoring image files as they come: batched, with a per-file result so one unreadable file does
//! not stop the others.
use super::Detector;
use crate::data::{load_rgb, resize_rgb};
use crate::error::Result;
use image::RgbImage;
use std::ops::Range;
use std::path::PathBuf;

impl Detector {
    /// Scores image files (any size; resized like training images), in batches of
    /// [`SCORE_BATCH`](crate::detector::SCORE_BATCH) or fewer.
    /// Returns one result per path, in order: a file that cannot be read or decoded gets its
    /// typed error and the rest are still scored. `progress(done)` is called with the files done
    /// so far. Each file is decoded and resized straight to the size the score uses, so
    /// full-size images are never held for the whole batch. On the CPU the batches go to
    /// parallel streams like [`score_batch`](Self::score_batch)'s, each decoding its own files;
    /// with one stream a batch's files are decoded in parallel (feature `parallel`).
    pub fn score_files(
        &self,
        paths: &[PathBuf],
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<Result<f32>>> {
        let resize = self.file_resizer();
        // one core per stream: decode on the stream's own thread
        let parallel_decode = self.plan(paths.len()).streams <= 1;
        let work = |det: &Detector, range: Range<usize>| {
            det.score_chunk(&paths[range], &resize, parallel_decode)
        };
        self.in_streams(paths.len(), &work, &mut progress)
    }

    /// One batch of files: each decoded and resized (`parallel`: over rayon's threads), the
    /// decoded ones scored together; a file's error stays in its slot.
    fn score_chunk(
        &self,
        chunk: &[PathBuf],
        resize: &FileResize,
        parallel: bool,
    ) -> Result<Vec<Result<f32>>> {
        // Decoded images go to one batch; each slot remembers whether it got one.
        let mut images: Vec<RgbImage> = Vec::with_capacity(chunk.len());
        let slots: Vec<Option<crate::Error>> = decode_each(chunk, &|i| resize.apply(&i), parallel)
            .into_iter()
            .map(|r| match r {
                Ok(img) => {
                    images.push(img);
                    None
                }
                Err(e) => Some(e),
            })
            .collect();
        let mut scores = self.score_one_stream(&images)?.into_iter();
        Ok(slots
            .into_iter()
            .map(|slot| match slot {
                None => Ok(scores.next().unwrap_or(f32::NAN)),
                Some(e) => Err(e),
            })
            .collect())
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

/// Each file decoded (RGB8) and passed through `f`, in order; over rayon's threads with the
/// feature `parallel` when `parallel`.
fn decode_each<F>(paths: &[PathBuf], f: &F, parallel: bool) -> Vec<Result<RgbImage>>
where
    F: Fn(RgbImage) -> RgbImage + Sync,
{
    #[cfg(feature = "parallel")]
    if parallel {
        use rayon::prelude::*;
        return paths.par_iter().map(|p| load_rgb(p).map(f)).collect();
    }
    let _ = parallel;
    paths.iter().map(|p| load_rgb(p).map(f)).collect()
}
