//! Progress bars on stderr (hidden when stderr is not a terminal).
use cutpaste::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps with a message and ETA.
pub(crate) fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let style =
        ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} {msg} (ETA {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    pb.set_style(style);
    pb.set_prefix(what.to_string());
    pb
}

/// Updates the training and feature bars (image model, then patch localizer) from fit events.
pub(crate) struct FitBars {
    bars: Vec<(&'static str, ProgressBar)>,
}

fn train_step(b: &ProgressBar, p: &cutpaste::model::Progress) {
    b.set_length(p.steps as u64); // a budgeted run re-plans its steps to end on time
    b.set_position(p.step as u64);
    b.set_message(format!(
        "loss {:.3} acc {:.2} {:.1} img/s",
        p.loss, p.accuracy, p.images_per_sec
    ));
    if p.step == p.steps {
        b.finish();
    }
}

fn count(b: &ProgressBar, done: usize, total: usize) {
    b.set_position(done as u64);
    if done == total {
        b.finish();
    }
}

impl FitBars {
    pub(crate) fn new() -> Self {
        Self { bars: Vec::new() }
    }

    fn get(&mut self, name: &'static str, len: usize) -> &ProgressBar {
        if let Some(i) = self.bars.iter().position(|(n, _)| *n == name) {
            return &self.bars[i].1;
        }
        self.bars.push((name, bar(len as u64, name)));
        &self.bars[self.bars.len() - 1].1
    }

    pub(crate) fn update(&mut self, e: &FitEvent) {
        match e {
            FitEvent::Train(p) => train_step(self.get("training", p.steps), p),
            FitEvent::Features { done, total } => {
                count(self.get("features", *total), *done, *total)
            }
            FitEvent::LocalizerTrain(p) => train_step(self.get("patches", p.steps), p),
            FitEvent::LocalizerFeatures { done, total } => {
                count(self.get("patch feat", *total), *done, *total)
            }
            _ => {}
        }
    }
}
