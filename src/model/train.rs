//! The self-supervised training loop (PAPER.md, "Two stages" 1 and "Training"): cross-entropy
//! between the classifier's logits and the augmentation labels, SGD with the paper's
//! hyper-parameters, one cosine cycle, a progress callback that can stop, periodic atomic
//! checkpoints, and batches prepared on a background thread. Prints nothing (logs via `log`).
use super::checkpoint;
use super::classifier::Classifier;
use super::feed::{with_prefetch, Feed, FeedSpec, Prefetch, Prepared};
use super::layers::scalar;
use super::optim::Sgd;
use super::pace::{Pace, Replan, Schedule, PACE_EVERY};
use super::source::BatchSource;
use crate::data::Normalization;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tch::{Kind, Reduction, Tensor};

/// Where and how often to checkpoint, and whether to resume from an existing checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointPolicy {
    /// The checkpoint file (overwritten atomically each time).
    pub path: PathBuf,
    /// Write after every `every` completed steps (≥ 1), after the last one and on a stop.
    pub every: usize,
    /// Continue from `path` when it exists (it must have been written with the same schedule).
    pub resume: bool,
}

impl CheckpointPolicy {
    /// The same policy for another network of the same fit: `stage` goes before the file's
    /// extension (`run.safetensors` → `run.patch.safetensors`), so the two never overwrite or
    /// resume from each other.
    pub fn for_stage(&self, stage: &str) -> Self {
        let mut name = self.path.file_stem().unwrap_or_default().to_os_string();
        name.push(".");
        name.push(stage);
        if let Some(ext) = self.path.extension() {
            name.push(".");
            name.push(ext);
        }
        Self {
            path: self.path.with_file_name(name),
            ..self.clone()
        }
    }
}

/// Optimisation hyper-parameters (PAPER.md Appendix A.1). The batch composition (32 source
/// images × the label set's views) is the [`BatchSource`]'s business.
///
/// Built from [`TrainParams::paper`] with one setter per field (`steps`, `learning_rate`, …);
/// each has a `get_` getter. [`check`](Self::check) validates the values, and every function
/// that takes them ([`train`], the detector's fit) checks them first.
///
/// ```
/// use cutpaste::model::TrainParams;
/// let params = TrainParams::paper().steps(2_000).learning_rate(0.01);
/// assert_eq!((params.get_steps(), params.get_learning_rate()), (2_000, 0.01));
/// assert!(params.check().is_ok());
/// assert!(params.learning_rate(0.0).check().is_err());
/// ```
///
/// Serialisable (serde): missing fields take the paper's values, the budget is written as
/// `budget_seconds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainParams {
    /// Number of SGD steps; the cosine schedule reaches 0 after the last one (paper: 65,536).
    pub(crate) steps: usize,
    /// Initial learning rate (paper: 0.03).
    pub(crate) learning_rate: f64,
    /// SGD momentum (paper: 0.9).
    pub(crate) momentum: f64,
    /// L2 weight decay on every parameter (paper: 3e-5).
    pub(crate) weight_decay: f64,
    /// Seed of libtorch's generator for the run (`tch::manual_seed`).
    pub(crate) seed: u64,
    /// Input normalisation (ImageNet statistics by default).
    pub(crate) normalization: Normalization,
    /// Periodic checkpoints; none by default.
    pub(crate) checkpoint: Option<CheckpointPolicy>,
    /// A wall-clock budget for the whole fit (see [`TrainParams::budget`]).
    #[serde(rename = "budget_seconds", with = "crate::serde_helpers::opt_seconds")]
    pub(crate) budget: Option<Duration>,
    /// How batches are prepared ahead of the network; `None` is [`Prefetch::auto`].
    pub(crate) prefetch: Option<Prefetch>,
    /// Set by a budgeted fit: re-plan the step count to end training at a deadline
    /// (`model::pace`). Never with a checkpoint policy (a resumed run must find its schedule).
    #[serde(skip)]
    pub(crate) pace: Option<Pace>,
}

impl TrainParams {
    /// The paper's protocol: 65,536 steps, lr 0.03, momentum 0.9, weight decay 3e-5.
    pub fn paper() -> Self {
        Self {
            steps: 65_536,
            learning_rate: 0.03,
            momentum: 0.9,
            weight_decay: 3e-5,
            seed: 0,
            normalization: Normalization::IMAGENET,
            checkpoint: None,
            budget: None,
            prefetch: None,
            pace: None,
        }
    }

    /// **[our choice]** Trains for a wall-clock budget for the whole `fit` (training, feature
    /// extraction, density), e.g. `Duration::from_secs(600)`, instead of a step count:
    /// `DetectorParams::fit` measures the step time and plans the number of steps so the fit
    /// ends within it (then [`steps`](Self::steps) is ignored), and the run re-plans every
    /// [`PACE_EVERY`](crate::model::PACE_EVERY) steps from its own step time so that training
    /// ends when planned (`model::pace`). Without one (the default) it
    /// trains exactly `steps` steps. See `pipeline::budget`. At least 1 s.
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The budget set by [`budget`](Self::budget), if any.
    pub fn get_budget(&self) -> Option<Duration> {
        self.budget
    }

    accessors!(
        /// Sets the number of SGD steps (≥ 1; paper: 65,536); the cosine schedule is stretched
        /// to it and reaches 0 after the last one.
        steps, get_steps: usize
    );
    accessors!(
        /// Sets the initial learning rate (> 0; paper: 0.03).
        learning_rate, get_learning_rate: f64
    );
    accessors!(
        /// Sets the SGD momentum (in [0, 1); paper: 0.9).
        momentum, get_momentum: f64
    );
    accessors!(
        /// Sets the L2 weight decay on every parameter (≥ 0; paper: 3e-5).
        weight_decay, get_weight_decay: f64
    );
    accessors!(
        /// Sets the seed of libtorch's generator for the run (`tch::manual_seed`). A detector's
        /// fit overrides it with `DetectorParams::seed`.
        seed, get_seed: u64
    );
    accessors!(
        /// Sets the input normalisation (default: ImageNet statistics).
        normalization, get_normalization: Normalization
    );

    /// Checkpoints to `path` every `every` steps (≥ 1), after the last one and on a stop,
    /// resuming from it when `resume` and it exists (it must have been written with the same
    /// schedule). In a detector with a localizer the patch model checkpoints with the same
    /// policy to `path` with `.patch` before its extension ([`CheckpointPolicy::for_stage`]).
    pub fn checkpoint(mut self, path: impl Into<PathBuf>, every: usize, resume: bool) -> Self {
        self.checkpoint = Some(CheckpointPolicy {
            path: path.into(),
            every,
            resume,
        });
        self
    }

    /// The checkpoint policy set by [`checkpoint`](Self::checkpoint), if any.
    pub fn get_checkpoint(&self) -> Option<&CheckpointPolicy> {
        self.checkpoint.as_ref()
    }

    /// Prepares batches with `prefetch` instead of [`Prefetch::auto`] for the classifier's
    /// device. Batches, and so results, do not depend on it.
    pub fn prefetch(mut self, prefetch: Prefetch) -> Self {
        self.prefetch = Some(prefetch);
        self
    }

    /// The pace of a budgeted fit's run, unless it checkpoints (a resumed run must find its
    /// schedule, so a checkpointed run keeps its plan).
    pub(crate) fn active_pace(&self) -> Option<Pace> {
        self.pace.filter(|_| self.checkpoint.is_none())
    }

    /// The prefetch set by [`prefetch`](Self::prefetch), if any (`None`: [`Prefetch::auto`]).
    pub fn get_prefetch(&self) -> Option<Prefetch> {
        self.prefetch
    }

    /// Checks every value; the error names the parameter and the valid range.
    pub fn check(&self) -> Result<()> {
        let bad = |name: &str, reason: String| Err(Error::invalid_param(name, reason));
        if self.steps == 0 {
            return bad("steps", "must be >= 1 (paper: 65536)".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(
                "learning_rate",
                format!("must be > 0 (paper: 0.03), got {}", self.learning_rate),
            );
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(
                "momentum",
                format!("must be in [0, 1) (paper: 0.9), got {}", self.momentum),
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "weight_decay",
                format!("must be >= 0 (paper: 3e-5), got {}", self.weight_decay),
            );
        }
        if let Some(b) = self.budget {
            if b.as_secs_f64() < 1.0 {
                return bad(
                    "budget",
                    format!(
                        "must be at least 1 s (e.g. 10m), got {:.3} s",
                        b.as_secs_f64()
                    ),
                );
            }
        }
        if let Some(c) = &self.checkpoint {
            if c.every == 0 {
                return bad("checkpoint.every", "must be >= 1 step".into());
            }
        }
        if let Some(p) = &self.prefetch {
            p.check()?;
        }
        self.normalization.check()
    }
}

impl Default for TrainParams {
    fn default() -> Self {
        Self::paper()
    }
}

/// Reported to the callback after every step.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Completed steps so far (1-based: 1 after the first step).
    pub step: usize,
    /// Total steps of the run (of a budgeted fit's paced run: the current plan, which
    /// re-plans may change).
    pub steps: usize,
    /// Cross-entropy of this step's batch (before the update).
    pub loss: f64,
    /// Fraction of this step's views classified correctly (before the update).
    pub accuracy: f64,
    /// Learning rate used by this step.
    pub learning_rate: f64,
    /// Wall time of this step, waiting for data included.
    pub step_time: Duration,
    /// Training throughput, views per second (moving average over recent steps).
    pub images_per_sec: f64,
    /// Estimated time to the end of the run.
    pub eta: Duration,
}

impl std::fmt::Display for Progress {
    /// `step 25/150 loss 1.008 acc 0.40 72.2 img/s`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "step {}/{} loss {:.3} acc {:.2} {:.1} img/s",
            self.step, self.steps, self.loss, self.accuracy, self.images_per_sec
        )
    }
}

/// The callback's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Stop after this step (a checkpoint is written first when checkpointing is on): `train`
    /// returns the report of the steps done, with [`TrainReport::stopped_at`] set. What a fit
    /// does with it is described in `pipeline`'s docs (training ends, the model is completed).
    Stop,
}

/// Summary of a finished run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// The step the run started from (> 0 when resumed from a checkpoint).
    pub start_step: usize,
    /// Per-step losses of this run, from `start_step` on.
    pub losses: Vec<f64>,
    /// Per-step accuracies of this run.
    pub accuracies: Vec<f64>,
    /// Wall time of this run.
    pub elapsed: Duration,
    /// `Some(step)` when the callback answered [`Control::Stop`] after `step` completed steps
    /// (of `params.steps`): the weights are those after that step. `None` when the run ended
    /// at its last step.
    pub stopped_at: Option<usize>,
    /// How a budgeted fit's run changed its step count to end at its deadline, in order (empty
    /// for a run of `params.steps`). The last one's `steps` is the number of steps trained.
    pub replans: Vec<Replan>,
}

/// Trains `classifier` on batches from `source` (PAPER.md stage 1).
///
/// Batch `s` is prepared on a background thread while step `s − 1` computes. After each step
/// `callback` receives a [`Progress`] and may answer [`Control::Stop`]. With a
/// [`CheckpointPolicy`] the full state (weights, BatchNorm statistics, momentum, step) is written
/// atomically every `every` steps, and a run resumed from it continues exactly where the
/// interrupted one was (same losses, same final weights on CPU), provided `source` is a pure
/// function of the step.
///
/// Errors: invalid parameters, a bad batch (empty → [`Error::EmptyDataset`], labels outside
/// `0..num_classes` → [`Error::InvalidInput`]), a non-finite loss ([`Error::NonFinite`]),
/// checkpoint I/O. A stop request is not an error: the report's `stopped_at` says where.
pub fn train<S: BatchSource>(
    classifier: &mut Classifier,
    source: &mut S,
    params: &TrainParams,
    mut callback: impl FnMut(&Progress) -> Control,
) -> Result<TrainReport> {
    params.check()?;
    tch::manual_seed(params.seed as i64);
    let mut sgd = Sgd::new(
        classifier.named_parameters(),
        params.momentum,
        params.weight_decay,
    )?;
    let start = match &params.checkpoint {
        Some(c) if c.resume && c.path.exists() => {
            checkpoint::load(&c.path, classifier, &sgd, params)?
        }
        _ => 0,
    };
    let mut run = Run {
        clf: classifier,
        sgd: &mut sgd,
        params,
        report: TrainReport {
            start_step: start,
            losses: vec![],
            accuracies: vec![],
            elapsed: Duration::ZERO,
            stopped_at: None,
            replans: vec![],
        },
    };
    if start >= params.steps {
        return Ok(run.report);
    }
    let device = run.clf.device();
    let spec = FeedSpec {
        num_classes: run.clf.config().num_classes,
        norm: params.normalization,
        device,
        prefetch: params.prefetch.unwrap_or_else(|| Prefetch::auto(device)),
    };
    let t0 = Instant::now();
    // a paced run may go past `params.steps`: batches are prepared until the feed is dropped
    let end = match params.active_pace() {
        Some(_) => usize::MAX,
        None => params.steps,
    };
    with_prefetch(source, start..end, spec, |feed| {
        run.steps(feed, start, &mut callback)
    })?;
    run.report.elapsed = t0.elapsed();
    Ok(run.report)
}

/// State of one `train` call.
struct Run<'a> {
    clf: &'a Classifier,
    sgd: &'a mut Sgd,
    params: &'a TrainParams,
    report: TrainReport,
}

impl Run<'_> {
    fn steps(
        &mut self,
        feed: &mut Feed,
        start: usize,
        callback: &mut impl FnMut(&Progress) -> Control,
    ) -> Result<()> {
        let mut schedule = Schedule::new(self.params.steps);
        let pace = self.params.active_pace();
        let mut window = (start, Instant::now());
        let mut avg_secs: Option<f64> = None;
        let mut step = start;
        while step < schedule.total() {
            let t = Instant::now();
            let batch = feed.next_batch()?;
            let lr = schedule.learning_rate(self.params.learning_rate, step);
            let (loss, accuracy) = self.step(&batch, lr)?;
            if !loss.is_finite() {
                return Err(Error::NonFinite {
                    what: format!("training loss (lr {lr:.3e}; lower the learning rate)"),
                    row: step,
                });
            }
            self.report.losses.push(loss);
            self.report.accuracies.push(accuracy);
            let done = step + 1;
            step = done;
            self.maybe_checkpoint(done, false)?;
            if done == start + 1 {
                window = (done, Instant::now()); // the first step pays for start-up: not timed
            }
            if let Some(pace) = pace.filter(|_| done.is_multiple_of(PACE_EVERY)) {
                self.repace(&pace, &mut schedule, &mut window, done);
            }
            let total = schedule.total();
            let dt = t.elapsed();
            let avg = avg_secs.map_or(dt.as_secs_f64(), |a| 0.9 * a + 0.1 * dt.as_secs_f64());
            avg_secs = Some(avg);
            let n = batch.labels.size().first().copied().unwrap_or(0) as f64;
            let progress = Progress {
                step: done,
                steps: total,
                loss,
                accuracy,
                learning_rate: lr,
                step_time: dt,
                images_per_sec: if avg > 0.0 { n / avg } else { 0.0 },
                eta: Duration::from_secs_f64(avg * (total - done) as f64),
            };
            log::debug!("step {done}/{total} loss {loss:.4} acc {accuracy:.3} lr {lr:.5}");
            if callback(&progress) == Control::Stop {
                self.maybe_checkpoint(done, true)?;
                log::info!("training stopped by the callback after step {done}");
                self.report.stopped_at = Some(done);
                return Ok(());
            }
        }
        Ok(())
    }

    /// A pace check after `done` steps: the step time over the window since the last check,
    /// and a re-plan of `schedule` when the rest no longer fits the time left (`model::pace`).
    fn repace(
        &mut self,
        pace: &Pace,
        schedule: &mut Schedule,
        window: &mut (usize, Instant),
        done: usize,
    ) {
        let now = Instant::now();
        let secs = now.duration_since(window.1).as_secs_f64() / (done - window.0).max(1) as f64;
        *window = (done, now);
        let left = pace.end.saturating_duration_since(now).as_secs_f64();
        if let Some(steps) = Pace::replan(done, schedule.total(), secs, left) {
            log::info!(
                "pace: {secs:.3} s/step, {left:.0} s left after step {done}: {} -> {steps} steps",
                schedule.total()
            );
            schedule.replan(done, steps);
            self.report.replans.push(Replan {
                at_step: done,
                steps: schedule.total(),
            });
        }
    }

    /// One SGD step; returns (loss, accuracy) of the batch before the update.
    fn step(&mut self, batch: &Prepared, lr: f64) -> Result<(f64, f64)> {
        self.sgd.zero_grad()?;
        let out = self.clf.forward_t(&batch.images, true)?;
        let labels = batch.labels.f_to_device(self.clf.device())?;
        // Cross-entropy = NLL of log-softmax, in fp32 whatever the forward precision.
        let loss = out.logits.f_log_softmax(-1, Kind::Float)?.f_nll_loss(
            &labels,
            None::<Tensor>,
            Reduction::Mean,
            -100,
        )?;
        loss.f_backward()?;
        self.sgd.step(lr)?;
        let correct = out.logits.f_argmax(-1, false)?.f_eq_tensor(&labels)?;
        let accuracy = correct.f_to_kind(Kind::Float)?.f_mean(Kind::Float)?;
        Ok((scalar(&loss)?, scalar(&accuracy)?))
    }

    /// Writes a checkpoint after `done` steps if the policy asks for it (or `force`).
    fn maybe_checkpoint(&self, done: usize, force: bool) -> Result<()> {
        let Some(c) = &self.params.checkpoint else {
            return Ok(());
        };
        let due = done.is_multiple_of(c.every) || done == self.params.steps;
        if force && due {
            return Ok(()); // already written for this step
        }
        if due || force {
            checkpoint::save(&c.path, self.clf, self.sgd, done, self.params)?;
        }
        Ok(())
    }
}
