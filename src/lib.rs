//! # cutpaste
//!
//! Self-supervised anomaly detection and localization for industrial images: CutPaste (Li, Sohn,
//! Yoon, Pfister, CVPR 2021) on libtorch. Train on **defect-free images only**; score new images
//! (**higher = more anomalous**, everywhere in the crate), decide with a threshold, and point at
//! the defect with a pixel anomaly map.
//!
//! ## The pipeline
//!
//! | stage | what happens | where |
//! |---|---|---|
//! | 1. augment | cut a patch of a normal image and paste it elsewhere (CutPaste), or paste a thin rotated scar; 3-way labels normal / CutPaste / Scar | [`augment`] |
//! | 2. train | a ResNet-18 (from scratch or torchvision weights) with an MLP head learns to tell the views apart (SGD 0.03, cosine) | [`model`] |
//! | 3. density | a Gaussian (Ledoit–Wolf) or KDE on the 512-d pooled features of the normal training images; score = squared Mahalanobis distance | [`density`] |
//! | 4. threshold | from normal images alone (F1-max against their CutPaste views, or a quantile), or from labelled defects | [`Detector::threshold_from_synthetic`], [`Detector::threshold_from_quantile`], [`Detector::threshold_from_f1`] |
//! | 5. localize | a patch model and one Gaussian per grid cell, upsampled to a pixel map; or GradCAM of the image score | [`localize`], [`heatmap`] |
//!
//! [`Detector::params`] returns a [`DetectorParams`] builder with the paper's defaults for every
//! stage; [`fit`](DetectorParams::fit) runs stages 1–3 (and 5 when a
//! [`localizer`](DetectorParams::localizer) is configured) and returns a fitted [`Detector`], a
//! different type, so scoring an unfitted model cannot compile. [`data`] loads images and
//! datasets (MVTec layout, plain folders, a generated synthetic category), [`metrics`] and
//! [`Detector::evaluate`] measure AUROC, AUPRO and F1, [`Detector::save`] / [`Detector::load`]
//! keep a fitted detector in one safetensors file.
//!
//! ## Quickstart
//!
//! A complete program (`examples/minimal.rs`): generate a small synthetic category, fit, pick a
//! threshold without defect samples, evaluate, and score a good and a defective image. Add the
//! crate as described in [Use as a dependency](#use-as-a-dependency) first.
//!
//! ```no_run
#![doc = include_str!("../examples/minimal.rs")]
//! ```
//!
//! Real data: `Dataset::mvtec("mvtec/bottle")?` (or [`FolderDataset`](data::FolderDataset)),
//! `.image_size(256)` and `TrainParams::paper().steps(2_000)` or more; a 3-seed bottle run is
//! reported in the repository's `docs/results.md`. The `cutpaste` command-line tool (feature
//! `cli`) wraps the same calls: `cutpaste train`, `eval`, `predict`.
//!
//! ## Modules
//!
//! | module | contents |
//! |---|---|
//! | [`data`] | image loading (any format → RGB8), MVTec-layout and folder datasets, masks, image↔tensor, the synthetic dataset generator |
//! | [`augment`] | CutPaste, Scar, binary / union / 3-way label sets, Cutout and Rotation baselines, pre-augmentation; no libtorch |
//! | [`model`] | ResNet-18 with torchvision parameter names, MLP head, classifier, the training loop, device and precision |
//! | [`density`] | Gaussian (Ledoit–Wolf or `reg_covar`) and KDE on `ndarray` features; no libtorch |
//! | [`pipeline`] | the typed builder [`DetectorParams`] and its parts ([`Backbone`](pipeline::Backbone), [`FitEvent`](pipeline::FitEvent)) |
//! | [`detector`] | the fitted [`Detector`]: score, embed, threshold, predict, evaluate ([`Report`]), save / load |
//! | [`localize`] | the patch model, dense patch features, per-location / shared Gaussians, receptive-field upsampling |
//! | [`heatmap`] | [`AnomalyMap`](heatmap::AnomalyMap), Turbo overlays, GradCAM |
//! | [`metrics`] | image AUROC, pixel AUROC, AUPRO, F1-max; exact, no libtorch |
//! | [`embedding`] | a t-SNE map of pooled features (normal, CutPaste, Scar, defects) |
//! | `report_html` | the HTML evaluation report (feature `html`) |
//! | [`error`] | the one [`Error`] type; messages name the file or parameter and the fix |
//! | [`prelude`] | the types most programs need |
//!
//! ## Use as a dependency
//!
//! ```toml
//! [dependencies]
//! cutpaste = { version = "0.1", features = ["openblas-system"] }
//! ```
//!
//! * **libtorch 2.11** at build time: `export LIBTORCH=<folder with lib/ and include/>` (e.g. the
//!   `torch/` folder of `pip install torch==2.11.0`). The lookup is torch-sys's, so its
//!   `LIBTORCH_USE_PYTORCH=1` is meant to work too (CI exercises `LIBTORCH`).
//! * **At run time** the binary must find `libtorch_cpu.so`: a five-line `build.rs` in your crate
//!   bakes in the folder cutpaste built against, which it passes on as `DEP_CUTPASTE_LIBTORCH_LIB`
//!   (or set `LD_LIBRARY_PATH=$LIBTORCH/lib`). The README's "Using the crate as a dependency"
//!   has the file and the checked steps.
//! * **One LAPACK backend** feature (below) in the final binary; `openblas-system` needs
//!   `libopenblas-dev`.
//! * `tch`, `ndarray` and `image` are re-exported ([`tch`], [`ndarray`], [`image`]): their types
//!   appear in cutpaste's signatures, so use these paths instead of matching versions by hand.
//!
//! ## Feature flags
//!
#![doc = document_features::document_features!()]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// libtorch bindings: [`Device`](tch::Device), [`Tensor`](tch::Tensor), `nn`. The exact `tch`
/// cutpaste is built with (0.24, libtorch 2.11).
pub use tch;

/// N-dimensional arrays: features are [`Array2<f32>`](ndarray::Array2), maps and masks 2-D
/// arrays. The `ndarray` cutpaste is built with (0.16).
pub use ndarray;

/// Image types and codecs: [`RgbImage`](image::RgbImage) in, [`GrayImage`](image::GrayImage)
/// masks. The `image` cutpaste is built with (0.25).
pub use image;

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

/// `setter!` plus a getter `fn getter(&self) -> Ty` (a copy of the field) for a `Copy` field
/// of a builder whose fields are private. Getters take `get_` names, as
/// `std::process::Command`'s do, because the setters already have the plain ones.
macro_rules! accessors {
    ($(#[$doc:meta])* $name:ident, $getter:ident: $ty:ty) => {
        setter!($(#[$doc])* $name: $ty);
        #[doc = concat!("The value set by [`", stringify!($name), "`](Self::", stringify!($name), ").")]
        pub fn $getter(&self) -> $ty {
            self.$name
        }
    };
}

pub mod atomic_file;
pub mod augment;
pub mod data;
pub mod density;
pub mod detector;
pub mod embedding;
pub mod error;
pub mod heatmap;
mod linalg;
pub mod localize;
pub mod metrics;
pub mod model;
pub mod pipeline;
#[cfg(feature = "html")]
#[cfg_attr(docsrs, doc(cfg(feature = "html")))]
pub mod report_html;
mod serde_helpers;

pub use detector::{Detector, Prediction, Report};
pub use error::{Error, ErrorKind, Missing, Result};
pub use pipeline::{DetectorParams, ValidDetectorParams};

/// The types most programs need: `use cutpaste::prelude::*;`.
pub mod prelude {
    pub use crate::augment::Augmentation;
    pub use crate::data::{Dataset, FolderDataset, MvtecOptions};
    pub use crate::density::Density;
    pub use crate::detector::{Detector, Prediction, Report};
    pub use crate::error::{Error, ErrorKind, Result};
    pub use crate::localize::{FeatureMode, LocalizerParams, PatchCovariance, PatchDensity};
    pub use crate::model::{Control, FastPath, TrainParams};
    pub use crate::pipeline::{
        Backbone, DetectorParams, FitEvent, ImageScore, ValidDetectorParams,
    };
    pub use tch::Device;
}

/// The README's code blocks, compiled as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
