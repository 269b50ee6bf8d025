//! Scoring image files as they come: batched, with a per-file result so one unreadable file does
//! not stop the others.
use super::{Detector, SCORE_BATCH};
use crate::data::load_rgb;
use crate::error::Result;
use image::RgbImage;
use std::path::PathBuf;

impl Detector {
    /// Scores image files (any size; resized like training images), [`SCORE_BATCH`] at a time.
    /// Returns one result per path, in order: a file that cannot be read or decoded gets its
    /// typed error and the rest are still scored. `progress(done)` is called after each batch.
    pub fn score_files(
        &self,
        paths: &[PathBuf],
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<Result<f32>>> {
        let mut out: Vec<Result<f32>> = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(SCORE_BATCH) {
            // Decoded images go to one batch; each slot remembers whether it got one.
            let mut images: Vec<RgbImage> = Vec::with_capacity(chunk.len());
            let slots: Vec<Option<crate::Error>> = chunk
                .iter()
                .map(|p| match load_rgb(p) {
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
}
