//! # cutpaste
//!
//! CutPaste (Li et al., CVPR 2021) self-supervised anomaly detection and localization for
//! industrial images, on libtorch. See the README for a tour.
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// A consuming builder setter `fn name(mut self, name: Ty) -> Self` with its doc comment; shared
/// by the parameter builders (`DetectorParams`, `LocalizerParams`).
macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, $name: $ty) -> Self {
            self.$name = $name;
            self
        }
    };
}

pub mod augment;
pub mod data;
pub mod density;
pub mod detector;
pub mod embedding;
pub mod error;
pub mod heatmap;
pub mod localize;
pub mod metrics;
pub mod model;
pub mod pipeline;
#[cfg(feature = "html")]
#[cfg_attr(docsrs, doc(cfg(feature = "html")))]
pub mod report_html;

pub use detector::{Detector, Prediction, Report};
pub use error::{Error, Result};
pub use pipeline::DetectorParams;

/// The types most programs need: `use cutpaste::prelude::*;`.
pub mod prelude {
    pub use crate::augment::Augmentation;
    pub use crate::data::{Dataset, FolderDataset, MvtecOptions};
    pub use crate::density::Density;
    pub use crate::detector::{Detector, Prediction, Report};
    pub use crate::error::{Error, Result};
    pub use crate::localize::{FeatureMode, LocalizerParams, PatchDensity};
    pub use crate::model::{Control, FastPath, TrainParams};
    pub use crate::pipeline::{Backbone, DetectorParams, FitEvent, ImageScore};
    pub use tch::Device;
}

/// The README's code blocks, compiled as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
