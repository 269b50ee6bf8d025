//! Scoring in parallel streams on the CPU: batches spread over a few copies of the detector,
//! each on its own thread with a share of the intra-op threads, instead of every batch in turn
//! over all of them.
//!
//! Why: a forward split over two threads waits, operator after operator, for the slower half,
//! and the serial work between operators leaves the other core idle; two one-thread streams fill
//! each other's gaps. On the 2-core AMX CPU of docs/results.md ("Scoring streams") two streams
//! of one thread scored the bench's 256² images faster than one stream of two threads (numbers
//! and command there).
//!
//! The rule: streams = min(the caller's intra-op threads, [`MAX_STREAMS`], jobs), each with
//! threads ÷ streams intra-op threads, and jobs of [`SCORE_BATCH`] ÷ streams images (so as many
//! images are in flight as with one stream, and the streams finish together); off the CPU,
//! one stream of [`SCORE_BATCH`]-image jobs. Only the 2-core case was measured.
//! `CUTPASTE_SCORE_STREAMS=N` caps the streams (`1`: off). A copy shares the networks'
//! variables with the detector (nothing is copied but the density, and the fused
//! backbone's packed weights each copy builds); it is built on its stream's thread while the
//! caller already scores, and kept for later calls until a `&mut` method changes the scores.
//!
//! Scores do not depend on the streams: each batch is the same batch of the same images, and
//! the copies hold the same variables; only the split of an operator over threads, hence the
//! order of some floating-point sums, can differ (tested below).
use super::{Detector, ScoreScale, SCORE_BATCH};
use crate::density::FittedDensity;
use crate::error::Result;
use crate::localize::SharedLocalizer;
use crate::model::{SharedClassifier, ThreadIntraOp};
use crate::pipeline::DetectorParams;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// Most streams, whatever the core count (each holds its own packed weights for the fused
/// backbone and a job's activations).
pub const MAX_STREAMS: usize = 4;

/// Copies of a detector for its streams beyond the first.
#[derive(Debug, Default)]
pub(super) struct Replicas(Mutex<Vec<Detector>>);

impl Replicas {
    /// Drops the copies (the detector changed).
    pub(super) fn clear(&mut self) {
        self.0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn take(&self) -> Vec<Detector> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn put(&self, copies: Vec<Detector>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(copies);
    }
}

/// A stream's copy: kept from an earlier call, or to be built on the stream's thread.
enum StreamCopy {
    Ready(Box<Detector>),
    Parts(Box<Parts>),
}

/// What a copy is built from: the detector's parts with its networks' variables shared, not
/// copied (`Send`, unlike the detector; the copy reads the same weights).
struct Parts {
    classifier: SharedClassifier,
    localizer: Option<SharedLocalizer>,
    density: FittedDensity,
    params: DetectorParams,
    score_scale: Option<ScoreScale>,
}

impl Detector {
    fn share(&self) -> Parts {
        Parts {
            classifier: self.classifier.share(),
            localizer: self.localizer.as_ref().map(|l| l.share()),
            density: self.density.clone(),
            params: self.params.clone(),
            score_scale: self.score_scale,
        }
    }
}

impl Parts {
    /// A detector that scores like the one shared (threshold and records are not needed).
    fn build(self) -> Result<Detector> {
        let localizer = self.localizer.map(SharedLocalizer::build).transpose()?;
        Ok(Detector::new(
            self.classifier.build()?,
            self.density,
            self.params,
            std::time::Duration::ZERO,
        )
        .with_localizer(localizer)
        .with_score_scale(self.score_scale))
    }
}

/// `CUTPASTE_SCORE_STREAMS`, if set to a positive count.
fn stream_cap() -> Option<usize> {
    let v = std::env::var("CUTPASTE_SCORE_STREAMS").ok()?;
    v.trim().parse::<usize>().ok().filter(|&n| n > 0)
}

/// A stream's job: the results of a range of items, scored by one copy of the detector.
pub(super) type Work<'a, T> = dyn Fn(&Detector, Range<usize>) -> Result<Vec<T>> + Sync + 'a;

/// What the streams share: the jobs (ranges of items), the results, and a stop flag set by the
/// first error.
struct Jobs<'a, T> {
    items: usize,
    size: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    stop: AtomicBool,
    results: Mutex<Vec<Option<Result<Vec<T>>>>>,
    work: &'a Work<'a, T>,
}

impl<T> Jobs<'_, T> {
    /// Takes jobs until none are left (or one failed), calling `after(items done)` after each.
    fn run(&self, det: &Detector, mut after: impl FnMut(usize)) {
        while !self.stop.load(Ordering::Relaxed) {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let start = i.saturating_mul(self.size);
            if start >= self.items {
                break;
            }
            let range = start..(start + self.size).min(self.items);
            let len = range.len();
            let r = (self.work)(det, range);
            self.stop.fetch_or(r.is_err(), Ordering::Relaxed);
            self.results.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(r);
            after(self.done.fetch_add(len, Ordering::Relaxed) + len);
        }
    }

    /// The items' results in order, or the first failed job's error.
    fn collect(self) -> Result<Vec<T>> {
        let results = self
            .results
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::with_capacity(self.items);
        for r in results {
            match r {
                Some(r) => out.extend(r?),
                None => {
                    return Err(crate::Error::internal(
                        "a scoring stream stopped without a result or an error",
                    ))
                }
            }
        }
        Ok(out)
    }
}

/// How `items` images are scored: streams, the images per job and each stream's intra-op
/// threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Plan {
    pub(super) streams: usize,
    pub(super) job: usize,
    threads: usize,
}

impl Detector {
    /// The streams and job size for `items` images; see the module docs. Jobs are
    /// [`SCORE_BATCH`] ÷ streams images, so the images in flight are one batch's, as with one
    /// stream, and the last jobs balance out.
    pub(super) fn plan(&self, items: usize) -> Plan {
        let threads = usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1);
        let one = Plan {
            streams: 1,
            job: SCORE_BATCH,
            threads,
        };
        if self.classifier.device() != tch::Device::Cpu {
            return one;
        }
        let cap = stream_cap().unwrap_or(MAX_STREAMS).min(MAX_STREAMS);
        let streams = threads.min(cap);
        let job = SCORE_BATCH.div_ceil(streams);
        let streams = streams.min(items.div_ceil(job));
        match streams > 1 {
            true => Plan {
                streams,
                job,
                threads: (threads / streams).max(1),
            },
            false => one,
        }
    }

    /// `work(detector, range)` (one result per item of the range) over all `items`, in jobs of
    /// [`plan`](Self::plan)'s size on its streams; the results in item order, or the error of
    /// the first failed job in order (no job starts after a failure). `progress(done)` is
    /// called on this thread with the items done so far.
    pub(super) fn in_streams<T: Send>(
        &self,
        items: usize,
        work: &Work<'_, T>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<T>> {
        let Plan {
            streams,
            job,
            threads: per_stream,
        } = self.plan(items);
        let shared = Jobs {
            items,
            size: job,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            results: Mutex::new((0..items.div_ceil(job)).map(|_| None).collect()),
            work,
        };
        if streams <= 1 {
            shared.run(self, progress);
            return shared.collect();
        }
        let mut copies: Vec<StreamCopy> = self
            .replicas
            .take()
            .into_iter()
            .map(|d| StreamCopy::Ready(Box::new(d)))
            .collect();
        while copies.len() < streams - 1 {
            copies.push(StreamCopy::Parts(Box::new(self.share())));
        }
        let kept = std::thread::scope(|s| {
            let handles: Vec<_> = copies
                .into_iter()
                .map(|copy| {
                    let shared = &shared;
                    s.spawn(move || -> Result<Box<Detector>> {
                        let _threads = ThreadIntraOp::set(per_stream);
                        let det = match copy {
                            StreamCopy::Ready(d) => d,
                            StreamCopy::Parts(parts) => Box::new(parts.build()?),
                        };
                        shared.run(&det, |_| {});
                        Ok(det)
                    })
                })
                .collect();
            {
                let _threads = ThreadIntraOp::set(per_stream);
                shared.run(self, &mut *progress);
            }
            let mut kept = Vec::new();
            for h in handles {
                match h.join() {
                    Ok(Ok(det)) => kept.push(*det),
                    // this stream did no job; the others did them all
                    Ok(Err(e)) => log::warn!("a scoring stream could not build its copy: {e}"),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            kept
        });
        self.replicas.put(kept);
        let out = shared.collect()?;
        progress(items);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::{SyntheticKind, SyntheticSpec};
    use crate::localize::LocalizerParams;
    use crate::model::{Control, FastPath, Precision, ToySource, TrainParams};
    use crate::pipeline::ImageScore;
    use image::RgbImage;

    /// A tiny fitted detector (fp32 channels-last: the fused forward, exact enough to compare).
    fn fitted(score: ImageScore) -> Detector {
        let s = SyntheticSpec::new(SyntheticKind::Part)
            .side(64)
            .counts(12, 0, 0)
            .seed(3);
        let train: Vec<RgbImage> = (0..s.n_train).map(|i| s.train_image(i)).collect();
        let mut params = Detector::params()
            .image_size(32)
            .batch_images(2)
            .training(TrainParams::paper().steps(2))
            .device(tch::Device::Cpu)
            .fast_path(FastPath {
                precision: Precision::Fp32,
                channels_last: true,
            })
            .seed(2)
            .image_score(score);
        if score != ImageScore::Pooled {
            let loc = LocalizerParams::dense()
                .steps(2)
                .batch_images(2)
                .pca_dim(8)
                .pca_images(6);
            params = params.localizer(loc);
        }
        params
            .fit_images_with(train, |_| Control::Continue)
            .unwrap()
    }

    fn assert_close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + x.abs().max(y.abs())),
                "image {i}: {x} vs {y}"
            );
        }
    }

    fn copies(det: &Detector) -> usize {
        det.replicas.0.lock().unwrap().len()
    }

    /// The streams a test can check, or `None` (skip) on a one-thread machine.
    fn streams(det: &Detector, n: usize) -> Option<usize> {
        let plan = det.plan(n);
        if plan.streams < 2 {
            eprintln!("skipped: one intra-op thread, so one stream");
            return None;
        }
        assert_eq!(plan.job, SCORE_BATCH.div_ceil(plan.streams));
        Some(plan.streams)
    }

    #[test]
    fn streams_score_like_one_stream_and_keep_their_copies() {
        let det = fitted(ImageScore::Pooled);
        let images = ToySource::synthetic_images(40, 48, 9);
        let Some(streams) = streams(&det, images.len()) else {
            return;
        };
        let one = det.score_one_stream(&images).unwrap();
        assert_eq!(copies(&det), 0);
        assert_close(&det.score_batch(&images).unwrap(), &one);
        assert_eq!(copies(&det), streams - 1, "the copies are kept");
        let ptr = |d: &Detector| d.classifier.named_variables()["conv1.weight"].data_ptr();
        for copy in det.replicas.0.lock().unwrap().iter() {
            assert_eq!(ptr(copy), ptr(&det), "a copy reads the detector's weights");
        }
        assert_close(&det.score_batch(&images).unwrap(), &one);
        assert_eq!(copies(&det), streams - 1, "and reused, not rebuilt");
        // one image: one job, one stream
        assert_eq!(det.plan(1).streams, 1);
    }

    #[test]
    fn a_new_score_scale_reaches_the_streams() {
        let mut det = fitted(ImageScore::Combined);
        let images = ToySource::synthetic_images(24, 64, 4);
        if streams(&det, images.len()).is_none() {
            return;
        }
        let before = det.score_batch(&images).unwrap();
        assert!(copies(&det) > 0);
        det.fit_score_scale(&images[..6]).unwrap();
        let after = det.score_batch(&images).unwrap();
        assert_close(&after, &det.score_one_stream(&images).unwrap());
        assert!(before.iter().zip(&after).any(|(a, b)| (a - b).abs() > 1e-3));
    }

    #[test]
    fn jobs_come_back_in_order_with_progress_and_the_first_error() {
        let det = fitted(ImageScore::Pooled);
        let n = 3 * SCORE_BATCH + 5;
        let mut seen = Vec::new();
        let ids = |_: &Detector, r: Range<usize>| Ok(r.collect::<Vec<usize>>());
        let out = det.in_streams(n, &ids, &mut |d| seen.push(d)).unwrap();
        assert_eq!(out, (0..n).collect::<Vec<_>>());
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert_eq!(seen.last(), Some(&n));
        let failing = |_: &Detector, r: Range<usize>| match r.contains(&40) || r.contains(&70) {
            true => Err(crate::Error::internal(format!("job at {}", r.start))),
            false => Ok(r.collect::<Vec<usize>>()),
        };
        let err = det.in_streams(n, &failing, &mut |_| {}).unwrap_err();
        let job = det.plan(n).job;
        assert!(
            err.to_string()
                .contains(&format!("job at {}", 40 / job * job)),
            "the first failing job's error: {err}"
        );
    }
}
