//! How a fit answers the caller's progress callback: a stop during training ends training and
//! the fit completes a partial model; a stop during feature extraction with no training
//! stopped before is [`Error::Stopped`](crate::Error::Stopped). The rules are documented on
//! [`DetectorParams::fit_with`](super::DetectorParams::fit_with).
use super::{FitEvent, StageRecord};
use crate::model::Control;

/// The caller's callback plus whether a training stage was stopped.
pub(crate) struct Steer<F> {
    callback: F,
    stopped: bool,
}

impl<F: FnMut(&FitEvent) -> Control> Steer<F> {
    /// Wraps the caller's callback.
    pub(crate) fn new(callback: F) -> Self {
        Self {
            callback,
            stopped: false,
        }
    }

    /// Whether a training stage was stopped: later training is skipped.
    pub(crate) fn stopped(&self) -> bool {
        self.stopped
    }

    /// Reports `event` and answers for the fit (see the module docs).
    pub(crate) fn event(&mut self, event: &FitEvent) -> Control {
        let answer = (self.callback)(event);
        match event {
            FitEvent::Train(_) | FitEvent::LocalizerTrain(_) => {
                self.stopped |= answer == Control::Stop;
                if self.stopped {
                    Control::Stop
                } else {
                    Control::Continue
                }
            }
            _ if self.stopped => Control::Continue,
            _ => answer,
        }
    }
}

impl StageRecord {
    /// Steps this stage trained: [`stopped_at`](Self::stopped_at) when the callback stopped it,
    /// else the last re-plan's total ([`replans`](Self::replans)), else
    /// [`planned_steps`](Self::planned_steps).
    pub fn steps_done(&self) -> usize {
        let total = self.replans.last().map_or(self.planned_steps, |r| r.steps);
        self.stopped_at.unwrap_or(total)
    }
}
