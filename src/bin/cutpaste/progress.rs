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

/// Updates the training and feature bars from fit events.
pub(crate) struct FitBars {
    train: ProgressBar,
    features: Option<ProgressBar>,
}

impl FitBars {
    pub(crate) fn new(steps: usize) -> Self {
        Self {
            train: bar(steps as u64, "training"),
            features: None,
        }
    }

    pub(crate) fn update(&mut self, e: &FitEvent) {
        match e {
            FitEvent::Train(p) => {
                self.train.set_position(p.step as u64);
                self.train.set_message(format!(
                    "loss {:.3} acc {:.2} {:.1} img/s",
                    p.loss, p.accuracy, p.images_per_sec
                ));
                if p.step == p.steps {
                    self.train.finish();
                }
            }
            FitEvent::Features { done, total } => {
                let b = self
                    .features
                    .get_or_insert_with(|| bar(*total as u64, "features"));
                b.set_position(*done as u64);
                if done == total {
                    b.finish();
                }
            }
            _ => {}
        }
    }
}
