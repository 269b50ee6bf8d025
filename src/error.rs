//! The crate's one error type. Every fallible public function returns [`Result<T>`]; messages
//! name the file or parameter at fault and say how to fix it.
//!
//! Callers that want to react to a category rather than to one variant match on
//! [`Error::kind`], e.g. to tell a missing threshold ([`ErrorKind::NotFitted`]) from a bad
//! setting ([`ErrorKind::InvalidParam`]) or a damaged file ([`ErrorKind::Checkpoint`]):
//!
//! ```
//! use cutpaste::{Error, ErrorKind};
//! let e = Error::invalid_param("stride", "must be >= 1, got 0");
//! assert_eq!(e.kind(), ErrorKind::InvalidParam);
//! ```
use std::fmt;
use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `cutpaste`. Bad input never panics: it ends up here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file or folder failed.
    #[error("I/O error on {path}: {source} (check that the path exists and is readable/writable)")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be decoded (or encoded) as an image.
    #[error("cannot decode image {path}: {source} (is it a valid PNG/JPEG/BMP/TIFF file? re-export it or remove it from the folder)")]
    Image {
        /// The image file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: image::ImageError,
    },
    /// A parameter value is out of range or inconsistent with another one.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParam {
        /// The parameter's name as in the builder / function signature.
        name: String,
        /// What is wrong and what would be valid.
        reason: String,
    },
    /// An input passed to a function (images, features, a map, arrays to restore from) cannot
    /// be used as it is: empty, of mixed sizes, not square, of the wrong shape. Settings are
    /// [`Error::InvalidParam`]; this is about the data.
    #[error("invalid input `{name}`: {reason}")]
    InvalidInput {
        /// The argument's name as in the function signature (e.g. `images`, `train`).
        name: String,
        /// What is wrong and what would be valid.
        reason: String,
    },
    /// A part of the detector that this call needs was never fitted or set (a decision
    /// threshold, a localizer); the message says how to add it.
    #[error("{what} is not set: {fix}")]
    NotFitted {
        /// The missing part.
        what: Missing,
        /// How to add it.
        fix: String,
    },
    /// The operation is not available for this detector's configuration (e.g. GradCAM with a
    /// non-Gaussian density, saving a user-defined density); the message says what works.
    #[error("{what} is not supported: {fix}")]
    Unsupported {
        /// The operation and what in the configuration rules it out.
        what: String,
        /// What to do instead.
        fix: String,
    },
    /// An invariant of the crate itself broke (a worker thread died, an array shape the code
    /// computed does not fit). Not caused by the caller's input: a bug worth reporting.
    #[error("internal error: {what} (this is a bug in cutpaste; please report it with the steps that led here)")]
    Internal {
        /// What went wrong.
        what: String,
    },
    /// A dataset folder holds no usable image.
    #[error("no images found in {path} (expected PNG/JPEG/BMP/TIFF files directly inside it; check the path, or for a dataset its root and layout, e.g. <category>/train/good/*.png)")]
    EmptyDataset {
        /// The folder that was expected to hold images.
        path: PathBuf,
    },
    /// A defect image has no ground-truth mask.
    #[error("defect image {image} has no mask (expected {expected}); add the mask or allow image-level-only data")]
    MissingMask {
        /// The defect image.
        image: PathBuf,
        /// Where the mask was looked for.
        expected: PathBuf,
    },
    /// A mask's size differs from its image's size.
    #[error("mask {mask} is {mask_width}x{mask_height} but its image {image} is {image_width}x{image_height}; masks must have the size of their image")]
    MaskMismatch {
        /// The mask file.
        mask: PathBuf,
        /// The image the mask belongs to.
        image: PathBuf,
        /// Mask width in pixels.
        mask_width: u32,
        /// Mask height in pixels.
        mask_height: u32,
        /// Image width in pixels.
        image_width: u32,
        /// Image height in pixels.
        image_height: u32,
    },
    /// An image is too small for the requested operation.
    #[error("image of {width}x{height} is too small for {what} (needs at least {min}x{min}); use larger images or a smaller {what}")]
    ImageTooSmall {
        /// Image width.
        width: u32,
        /// Image height.
        height: u32,
        /// Minimal side length needed.
        min: u32,
        /// What needed the size (e.g. "scar length").
        what: String,
    },
    /// Data (features, scores) holds NaN or infinite values.
    #[error("{what} holds a non-finite value (NaN or inf) at row {row}; check the inputs or the model that produced them")]
    NonFinite {
        /// What was being checked.
        what: String,
        /// First offending row.
        row: usize,
    },
    /// Array dimensions do not match what a fitted object expects.
    #[error("{what}: expected dimension {expected}, got {got}")]
    DimensionMismatch {
        /// What was being checked.
        what: String,
        /// Expected size.
        expected: usize,
        /// Actual size.
        got: usize,
    },
    /// A covariance matrix could not be inverted. The advice works whatever the covariance
    /// estimator: Ledoit–Wolf (the default) cannot help with fewer than 3 distinct samples.
    #[error("covariance is singular ({reason}); fit on more normal images that differ from each \
             other (at least 3), or use the KDE density (Density::kde(), CLI: --density kde), or \
             the empirical covariance with a regulariser (Covariance::Empirical {{ reg_covar: 1e-3 }})")]
    SingularCovariance {
        /// Details from the factorisation.
        reason: String,
    },
    /// A metric needs both classes (normal and anomalous) but only one is present.
    #[error("{what} needs both normal and anomalous samples, but only {present} ones were given")]
    SingleClass {
        /// The metric.
        what: String,
        /// The class that is present ("normal" or "anomalous").
        present: String,
    },
    /// A checkpoint file is unreadable, foreign, of another format version or incomplete.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A libtorch operation failed.
    #[error("libtorch error: {0}")]
    Torch(#[from] tch::TchError),
    /// A LAPACK operation failed.
    #[error(
        "linear algebra error: {0} (check the features for NaN/inf or use Ledoit-Wolf shrinkage)"
    )]
    Linalg(#[from] ndarray_linalg::error::LinalgError),
    /// The caller's progress callback answered `Control::Stop` where no usable result can be
    /// completed (e.g. while extracting the features a density needs). A stop during
    /// *training* in `DetectorParams::fit_with` is not an error: training ends there and the
    /// fit completes a model from what was trained.
    #[error(
        "stopped by the progress callback during {stage} ({step} done): no model can be \
         completed without it; to keep a partially trained model, stop during training"
    )]
    Stopped {
        /// What was running, e.g. `feature extraction`.
        stage: String,
        /// Steps or images done when the stop was requested.
        step: usize,
    },
    /// A weights file's tensors do not match the network's variables.
    #[error("weights file {path} does not match the network: {}; expected the network's names \
             and shapes (torchvision `resnet18().state_dict()` names such as `conv1.weight` and \
             `layer1.0.bn1.running_mean` for a backbone; `fc.*` and `*.num_batches_tracked` are \
             ignored)", mismatch_summary(.missing, .unexpected, .mismatched))]
    WeightsMismatch {
        /// The weights file.
        path: PathBuf,
        /// Variables of the network the file lacks.
        missing: Vec<String>,
        /// Tensors in the file the network has no variable for.
        unexpected: Vec<String>,
        /// `name: file [shape], network [shape]` for every shape mismatch.
        mismatched: Vec<String>,
    },
    /// Two things that must have the same pixel size (an image and its anomaly map) do not.
    #[error("{what}: expected {}x{} (width x height), got {}x{}; resize one of them first \
             (e.g. AnomalyMap::resize or data::resize_rgb)", .expected.0, .expected.1, .got.0, .got.1)]
    SizeMismatch {
        /// What was compared, e.g. "overlay image vs anomaly map".
        what: String,
        /// The size required, `(width, height)`.
        expected: (u32, u32),
        /// The size given, `(width, height)`.
        got: (u32, u32),
    },
    /// A CUDA device was asked for but cannot be used here; the message says why (no CUDA in
    /// this build, no usable GPU, no such GPU index) and what to do.
    #[error("cannot use device {device}: {problem}")]
    DeviceUnavailable {
        /// The device asked for, e.g. `cuda:0`.
        device: String,
        /// Why it cannot be used.
        problem: crate::model::CudaProblem,
    },
}

/// "missing [a, b]; unexpected [c]; shape mismatch [d: …]", skipping empty lists.
fn mismatch_summary(missing: &[String], unexpected: &[String], mismatched: &[String]) -> String {
    [
        ("missing", missing),
        ("unexpected", unexpected),
        ("shape mismatch", mismatched),
    ]
    .iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(what, v)| format!("{what} [{}]", v.join(", ")))
    .collect::<Vec<_>>()
    .join("; ")
}

/// The part of a detector an [`Error::NotFitted`] is about.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Missing {
    /// The decision threshold of `predict`.
    Threshold,
    /// The patch localizer of `localize`.
    Localizer,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Missing::Threshold => "the decision threshold",
            Missing::Localizer => "the localizer",
        })
    }
}

/// What kind of thing went wrong: the category to match on when the exact variant does not
/// matter ([`Error::kind`]). New kinds may be added.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A setting is out of range or inconsistent with another: fix the parameters
    /// ([`Error::InvalidParam`]).
    InvalidParam,
    /// The data given cannot be used: images (undecodable, too small, mixed sizes), datasets
    /// (empty, missing or mis-sized masks), features (NaN, wrong width, a singular covariance),
    /// a metric given one class only ([`Error::InvalidInput`], [`Error::Image`],
    /// [`Error::EmptyDataset`], [`Error::MissingMask`], [`Error::MaskMismatch`],
    /// [`Error::ImageTooSmall`], [`Error::NonFinite`], [`Error::DimensionMismatch`],
    /// [`Error::SingularCovariance`], [`Error::SingleClass`], [`Error::SizeMismatch`]).
    Data,
    /// A stage the call needs was not fitted or set: no threshold, no localizer
    /// ([`Error::NotFitted`]; its [`Missing`] says which).
    NotFitted,
    /// The call is not available for this configuration ([`Error::Unsupported`]).
    Unsupported,
    /// A checkpoint or weights file is unreadable, foreign, of another version, incomplete or
    /// does not match the network ([`Error::Checkpoint`], [`Error::WeightsMismatch`]).
    Checkpoint,
    /// Reading or writing the file system failed ([`Error::Io`]).
    Io,
    /// The requested device cannot be used ([`Error::DeviceUnavailable`]).
    Device,
    /// libtorch or LAPACK reported a failure ([`Error::Torch`], [`Error::Linalg`]).
    Backend,
    /// The progress callback stopped the work before a result existed ([`Error::Stopped`]).
    Stopped,
    /// A bug in this crate ([`Error::Internal`]).
    Internal,
}

impl Error {
    /// The category of this error (see [`ErrorKind`] for which variants fall in which).
    pub fn kind(&self) -> ErrorKind {
        use Error as E;
        match self {
            E::InvalidParam { .. } => ErrorKind::InvalidParam,
            E::InvalidInput { .. }
            | E::Image { .. }
            | E::EmptyDataset { .. }
            | E::MissingMask { .. }
            | E::MaskMismatch { .. }
            | E::ImageTooSmall { .. }
            | E::NonFinite { .. }
            | E::DimensionMismatch { .. }
            | E::SingularCovariance { .. }
            | E::SingleClass { .. }
            | E::SizeMismatch { .. } => ErrorKind::Data,
            E::NotFitted { .. } => ErrorKind::NotFitted,
            E::Unsupported { .. } => ErrorKind::Unsupported,
            E::Checkpoint { .. } | E::WeightsMismatch { .. } => ErrorKind::Checkpoint,
            E::Io { .. } => ErrorKind::Io,
            E::DeviceUnavailable { .. } => ErrorKind::Device,
            E::Torch(_) | E::Linalg(_) => ErrorKind::Backend,
            E::Stopped { .. } => ErrorKind::Stopped,
            E::Internal { .. } => ErrorKind::Internal,
        }
    }

    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid_input(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::NotFitted`].
    pub fn not_fitted(what: Missing, fix: impl Into<String>) -> Self {
        Error::NotFitted {
            what,
            fix: fix.into(),
        }
    }

    /// Shorthand for [`Error::Unsupported`].
    pub fn unsupported(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Error::Unsupported {
            what: what.into(),
            fix: fix.into(),
        }
    }

    /// Shorthand for [`Error::Internal`].
    pub fn internal(what: impl Into<String>) -> Self {
        Error::Internal { what: what.into() }
    }

    /// Shorthand for [`Error::InvalidParam`].
    pub fn invalid_param(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidParam {
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_parameter_and_the_fix() {
        let e = Error::invalid_param("stride", "must be >= 1, got 0");
        assert_eq!(
            e.to_string(),
            "invalid parameter `stride`: must be >= 1, got 0"
        );
        let e = Error::SingularCovariance {
            reason: "leading minor 3 not positive".into(),
        };
        assert!(e.to_string().contains("--density kde"));
        assert!(e.to_string().contains("reg_covar"));
        let e = Error::EmptyDataset {
            path: "bottle/train/good".into(),
        };
        assert!(e.to_string().contains("bottle/train/good"));
        assert_eq!(e.kind(), ErrorKind::Data);
        let e = Error::not_fitted(Missing::Threshold, "call set_threshold first");
        assert_eq!(e.kind(), ErrorKind::NotFitted);
        assert!(e.to_string().contains("set_threshold"), "{e}");
        assert_eq!(Error::internal("x").kind(), ErrorKind::Internal);
    }
}
