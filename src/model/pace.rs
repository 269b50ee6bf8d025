//! Pacing a run to a deadline **[our choice; the paper trains for a fixed 65,536 steps]**.
//!
//! A budgeted fit plans its step count from a few warm-up steps (`pipeline::budget`). On a
//! shared machine the step time then drifts by ±15 % over minutes, so a fixed plan either ends
//! a minute early or runs past the budget. With a pace, the run measures its own step time every
//! [`PACE_EVERY`] steps and re-plans the total so that training ends at the deadline. The
//! learning rate stays one cosine cycle ([`Schedule`]): after a re-plan the rest of the cycle is
//! spread evenly over the new remaining steps, so it is continuous and still reaches 0 at the
//! end. Every re-plan is recorded ([`Replan`]).
use super::optim::cosine_at;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Steps between two pace checks (the step time is measured over them).
pub const PACE_EVERY: usize = 20;

/// One re-plan of a paced run: after `at_step` completed steps the total became `steps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replan {
    /// Completed steps when the total changed.
    pub at_step: usize,
    /// The run's new total.
    pub steps: usize,
}

/// The end of training a run paces itself to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pace {
    /// When the last step should have ended.
    pub(crate) end: Instant,
}

impl Pace {
    /// The new total after `done` completed steps of `total`, measured at `secs_per_step` with
    /// `secs_left` before the end; `None` keeps `total` (a change under 2 % of it, or at least
    /// 2 steps, is step-time noise). Always leaves at least one step to go.
    pub(crate) fn replan(
        done: usize,
        total: usize,
        secs_per_step: f64,
        secs_left: f64,
    ) -> Option<usize> {
        if !(secs_per_step.is_finite() && secs_per_step > 0.0) || done >= total {
            return None;
        }
        let fits = (secs_left.max(0.0) / secs_per_step).floor() as usize;
        let new_total = done.saturating_add(fits.max(1));
        let noise = (total / 50).max(2);
        (new_total.abs_diff(total) >= noise).then_some(new_total)
    }
}

/// One cosine cycle over a total that may change while the run trains.
///
/// Progress runs from 0 at step 0 to 1 at the end, and the learning rate is
/// `base · (1 + cos(π · progress)) / 2`. Until the first re-plan, progress is `step / total`
/// ([`cosine_lr`](crate::model::cosine_lr), bit for bit). A re-plan after step `k` keeps the progress reached at `k` and
/// spreads what is left evenly over the new remaining steps.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Schedule {
    total: usize,
    /// `(k, progress at k)` of the last re-plan.
    replanned: Option<(usize, f64)>,
}

impl Schedule {
    /// The fixed schedule over `total` steps.
    pub(crate) fn new(total: usize) -> Self {
        Self {
            total,
            replanned: None,
        }
    }

    /// The current total.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// Progress in [0, 1] at `step` (0-based).
    pub(crate) fn progress(&self, step: usize) -> f64 {
        let step = step.min(self.total);
        match self.replanned {
            None => step as f64 / self.total.max(1) as f64,
            Some((k, at_k)) => {
                let left = self.total.saturating_sub(k).max(1) as f64;
                at_k + step.saturating_sub(k) as f64 * (1.0 - at_k) / left
            }
        }
    }

    /// The learning rate of `step` (0-based) for a base rate `base`.
    pub(crate) fn learning_rate(&self, base: f64, step: usize) -> f64 {
        cosine_at(base, self.progress(step))
    }

    /// Changes the total to `total` after `done` completed steps (at least one step is left).
    pub(crate) fn replan(&mut self, done: usize, total: usize) {
        let at = self.progress(done);
        self.replanned = Some((done, at));
        self.total = total.max(done + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        cosine_lr, train, Classifier, ClassifierConfig, Control, FastPath, HeadConfig, ToySource,
        TrainParams,
    };

    /// `steps` of a paced run on 32 px toy images: the report and each step's learning rate.
    fn paced_run(steps: usize, end: Instant) -> (crate::model::TrainReport, Vec<f64>) {
        let config = ClassifierConfig {
            num_classes: 2,
            head: HeadConfig::paper(),
            fast_path: FastPath::FP32,
        };
        let mut clf = Classifier::new(&config, tch::Device::Cpu, 0).unwrap();
        let mut source = ToySource::new(ToySource::synthetic_images(4, 32, 1), 2, 0).unwrap();
        let mut params = TrainParams::paper().steps(steps);
        params.pace = Some(Pace { end });
        let mut rates = vec![];
        let report = train(&mut clf, &mut source, &params, |p| {
            rates.push(p.learning_rate);
            Control::Continue
        })
        .unwrap();
        (report, rates)
    }

    #[test]
    fn a_run_past_its_end_shortens_to_one_more_step_at_the_first_check() {
        // the end has passed: at the first check (step 20) the run re-plans to 21 steps
        let (report, rates) = paced_run(100, Instant::now());
        let replan = Replan {
            at_step: PACE_EVERY,
            steps: PACE_EVERY + 1,
        };
        assert_eq!(report.replans, vec![replan]);
        assert_eq!(report.losses.len(), PACE_EVERY + 1);
        // steps before the check follow the planned cosine; the last one keeps the rate the
        // schedule had reached (progress 0.2 of the 100 planned steps), one step from the end
        for (step, lr) in rates.iter().enumerate().take(PACE_EVERY) {
            assert_eq!(*lr, cosine_lr(0.03, step, 100));
        }
        assert_eq!(rates[PACE_EVERY], cosine_lr(0.03, PACE_EVERY, 100));
    }

    #[test]
    fn without_a_replan_the_schedule_is_the_fixed_cosine() {
        let s = Schedule::new(100);
        for step in [0, 1, 25, 50, 99, 100] {
            assert_eq!(s.learning_rate(0.03, step), cosine_lr(0.03, step, 100));
        }
        assert_eq!(s.progress(25), 0.25);
    }

    #[test]
    fn a_replan_keeps_the_rate_continuous_and_ends_the_cycle_at_the_new_total() {
        // 100 planned; after 20 steps (progress 0.2) the total becomes 60: the remaining 0.8 of
        // the cycle is spread over 40 steps, 0.02 a step.
        let mut s = Schedule::new(100);
        let before = s.learning_rate(0.03, 20);
        s.replan(20, 60);
        assert_eq!(s.total(), 60);
        assert_eq!(s.learning_rate(0.03, 20), before);
        assert!((s.progress(30) - 0.4).abs() < 1e-12);
        assert!((s.progress(59) - 0.98).abs() < 1e-12);
        assert!((s.progress(60) - 1.0).abs() < 1e-12);
        // lr(0.4) = 0.03 · (1 + cos(0.4π)) / 2 = 0.03 · (1 + 0.309016994) / 2
        assert!((s.learning_rate(0.03, 30) - 0.019_635_254_9).abs() < 1e-9);
        assert!(s.learning_rate(0.03, 60).abs() < 1e-18);
        // a second re-plan, longer this time: progress 0.4 at step 30, 0.6 left over 90 steps
        s.replan(30, 120);
        assert!((s.progress(75) - 0.7).abs() < 1e-12);
        // never less than one step left
        s.replan(40, 10);
        assert_eq!(s.total(), 41);
    }

    #[test]
    fn the_pace_fits_the_steps_to_the_time_left_and_ignores_noise() {
        // 100 done of 1,000 at 0.5 s a step with 300 s left: 600 more steps
        assert_eq!(Pace::replan(100, 1_000, 0.5, 300.0), Some(700));
        // with 455 s left: 910 more, 1,010 in all, within 2 % of 1,000: kept
        assert_eq!(Pace::replan(100, 1_000, 0.5, 455.0), None);
        // behind schedule with no time left: one more step
        assert_eq!(Pace::replan(100, 1_000, 0.5, -5.0), Some(101));
        // nothing measured, or already done: kept
        assert_eq!(Pace::replan(100, 1_000, 0.0, 300.0), None);
        assert_eq!(Pace::replan(1_000, 1_000, 0.5, 300.0), None);
        // small totals: a change of one step is noise
        assert_eq!(Pace::replan(20, 30, 1.0, 11.0), None);
        assert_eq!(Pace::replan(20, 30, 1.0, 14.0), Some(34));
    }
}
