//! # cutpaste
//!
//! CutPaste (Li et al., CVPR 2021) self-supervised anomaly detection and localization for
//! industrial images, on libtorch. See the README for a tour.
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod augment;
pub mod data;
pub mod density;
pub mod error;
pub mod metrics;
pub mod model;

pub use error::{Error, Result};

/// The README's code blocks, compiled as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
