//! Training for a wall-clock budget **[our choice; the paper trains for a fixed 65,536 steps]**.
//!
//! [`TrainParams::budget`](crate::model::TrainParams::budget) gives the whole `fit` a deadline.
//! Before a model trains, `plan_steps` runs [`WARMUP_STEPS`] steps of a throw-away copy of
//! the network on the real batch source (timing the steady-state ones) and one feature pass over [`PROBE_IMAGES`] images, then
//! plans as many steps as fit before the deadline once the feature extraction and density fit
//! that follow are paid for. The cosine schedule then runs over the planned steps, so the
//! learning rate still reaches 0 at the end.
//!
//! The run then paces itself (`model::pace`): every [`PACE_EVERY`](crate::model::PACE_EVERY)
//! steps it measures its own step time and, when the rest of the plan would end more than 2 %
//! early or late, re-plans the total so that training ends when planned. A shared machine's
//! step time drifts by ±15 % over minutes; without pacing, 10-minute runs ended from 140 s early
//! to 59 s late. A checkpointed run is not paced (a resumed run must find its schedule).
//!
//! The plan and its re-plans are recorded in the checkpoint and the report ([`StageRecord`]):
//! with `--steps` set to a recorded `planned_steps`, the same seed reproduces a run that was
//! never re-planned exactly, whatever the machine's speed.
use crate::error::Result;
use crate::model::pace::Pace;
use crate::model::{
    train, BatchSource, Classifier, ClassifierConfig, Control, Progress, Replan, TrainParams,
};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tch::Device;

/// Steps run before planning; the first [`WARMUP_DISCARD`] are not timed.
pub const WARMUP_STEPS: usize = 8;
/// Warm-up steps left out of the step time: the first pays for allocation and thread start-up,
/// and the next ones find their batches already prepared (the feeding thread worked ahead
/// during the slow first step), so they miss the steady state where augmentation competes with
/// the network for the cores. Timing steps 2–3 underestimated the steady step by 8–13 % on
/// mpdd and bsdata (10-minute runs ended 16 s past the budget).
pub const WARMUP_DISCARD: usize = 3;
/// Images whose feature pass is timed to estimate the post-training cost.
pub const PROBE_IMAGES: usize = 2;
/// Share of the remaining time kept back for what was not measured (density fit, threshold,
/// saving), on top of the estimated feature time.
const SAFETY: f64 = 0.10;

/// What one training stage planned and did under a budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    /// `image` (the image-level model) or `localizer` (the patch model).
    pub stage: String,
    /// The whole fit's budget in seconds (None: a fixed step count was asked for).
    pub budget_seconds: Option<f64>,
    /// Steps the stage planned (= asked for without a budget).
    pub planned_steps: usize,
    /// Measured seconds per step during the warm-up (0 without a budget).
    pub step_seconds: f64,
    /// Estimated seconds of feature extraction + density fit after training.
    pub post_seconds: f64,
    /// Wall time of the stage's training.
    pub train_seconds: f64,
    /// `Some(step)` when the progress callback stopped this stage's training after `step` of
    /// the `planned_steps` (0: the stage was not trained because an earlier stage was
    /// stopped); `None` when it trained every planned step (and in files written before this
    /// field existed). The cosine schedule was laid out over `planned_steps`, so rerunning
    /// with `--steps planned_steps` and stopping at `step` reproduces the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<usize>,
    /// How the paced run changed its step count to end when planned (empty when it kept
    /// `planned_steps`; see the module docs). The last one's `steps` is the steps trained.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replans: Vec<Replan>,
}

/// A deadline for the whole fit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    pub(crate) start: Instant,
    pub(crate) budget: Duration,
}

impl Deadline {
    /// Seconds left before the deadline (≥ 0).
    pub(crate) fn left(&self) -> f64 {
        (self.budget.as_secs_f64() - self.start.elapsed().as_secs_f64()).max(0.0)
    }
}

/// Plans the number of steps of one stage so that training plus `n_post_images` feature passes
/// end `share` of the way from now to the deadline (1.0 = at the deadline). `probe` runs one
/// feature pass of [`PROBE_IMAGES`] images on a classifier. Sets `training`'s steps and pace,
/// and returns the record without `train_seconds`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan_steps<S: BatchSource>(
    stage: &str,
    deadline: Deadline,
    share: f64,
    config: &ClassifierConfig,
    device: Device,
    source: &mut S,
    training: &mut TrainParams,
    n_post_images: usize,
    probe: impl Fn(&Classifier) -> Result<()>,
) -> Result<StageRecord> {
    let mut scratch = Classifier::new(config, device, training.seed ^ 0x5EED)?;
    let mut warm = training.clone().steps(WARMUP_STEPS);
    warm.checkpoint = None;
    warm.budget = None;
    warm.pace = None;
    let mut times = Vec::with_capacity(WARMUP_STEPS);
    train(&mut scratch, source, &warm, |p| {
        times.push(p.step_time.as_secs_f64());
        Control::Continue
    })?;
    let step = mean(&times[WARMUP_DISCARD.min(times.len())..]).max(1e-3);
    let t = Instant::now();
    probe(&scratch)?;
    let per_image = t.elapsed().as_secs_f64() / PROBE_IMAGES as f64;
    let post = per_image * n_post_images as f64;
    let left = deadline.left() * share.clamp(0.0, 1.0);
    let usable = left * (1.0 - SAFETY) - post;
    let planned = ((usable / step).floor().max(1.0)) as usize;
    training.steps = planned;
    training.pace = Some(Pace {
        end: Instant::now() + Duration::from_secs_f64(usable.max(0.0)),
    });
    log::info!(
        "{stage}: {step:.3} s/step, ~{post:.1} s of features after training, {left:.0} s left: \
         {planned} steps"
    );
    Ok(StageRecord {
        stage: stage.to_string(),
        budget_seconds: Some(deadline.budget.as_secs_f64()),
        planned_steps: planned,
        step_seconds: step,
        post_seconds: post,
        train_seconds: 0.0,
        stopped_at: None,
        replans: vec![],
    })
}

/// Trains one stage with `training` (its steps, and pace, set by [`plan_steps`] under a
/// budget) and completes its `record`: train time, where the callback stopped it, re-plans.
pub(crate) fn train_stage<S: BatchSource>(
    classifier: &mut Classifier,
    source: &mut S,
    training: &TrainParams,
    mut record: StageRecord,
    callback: impl FnMut(&Progress) -> Control,
) -> Result<StageRecord> {
    let t = Instant::now();
    let report = train(classifier, source, training, callback)?;
    record.train_seconds = t.elapsed().as_secs_f64();
    record.stopped_at = report.stopped_at;
    record.replans = report.replans;
    Ok(record)
}

/// The record of a stage trained for a fixed number of steps.
pub(crate) fn fixed(stage: &str, steps: usize) -> StageRecord {
    StageRecord {
        stage: stage.to_string(),
        budget_seconds: None,
        planned_steps: steps,
        step_seconds: 0.0,
        post_seconds: 0.0,
        train_seconds: 0.0,
        stopped_at: None,
        replans: vec![],
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}
