//! One-class density estimators on learned features (PAPER.md, "Density estimators"; CutPaste
//! §3.3): a Gaussian (GDE) with Ledoit–Wolf shrinkage or an empirical covariance plus `reg_covar`,
//! and the DROC-style kernel density estimator (KDE).
//!
//! A user-defined estimator (any [`DensityEstimator`]) plugs in through [`Density::custom`]; see
//! [`CustomDensity`] for an example.
//!
//! Rows are samples, columns are feature dimensions. Fitting takes an unfitted parameter value
//! ([`Density`], [`GaussianParams`], [`KdeParams`]) and returns a distinct fitted type
//! ([`FittedDensity`], [`FittedGaussian`], [`FittedKde`]): scoring an unfitted estimator cannot
//! compile. **Scores: higher = more anomalous**, everywhere.
//!
//! Everything here is plain Rust on `ndarray` + `ndarray-linalg` (no libtorch). The library picks
//! no LAPACK backend; enable one of the crate's pass-through features (`openblas-system`, …).
//!
//! ```
//! use cutpaste::density::{Density, GaussianParams, Covariance};
//! use ndarray::Array2;
//! # fn main() -> cutpaste::Result<()> {
//! let train = Array2::<f32>::from_shape_fn((100, 16), |(i, j)| ((i * 7 + j * 3) % 11) as f32);
//! let test = train.slice(ndarray::s![..5, ..]).to_owned();
//! // default: L2-normalised features, Ledoit–Wolf covariance, squared Mahalanobis distance
//! let fitted = Density::gaussian().fit(train.view())?;
//! let scores = fitted.score(test.view())?; // higher = more anomalous
//! assert_eq!(scores.len(), 5);
//! // the paper authors' stack: empirical covariance + 1e-6 on the diagonal
//! let gde = Density::Gaussian(GaussianParams::default().covariance(Covariance::empirical()));
//! let _ = gde.fit(train.view())?;
//! // save / restore through plain arrays (checkpoints store them in safetensors)
//! let (record, arrays) = (fitted.record()?, fitted.to_arrays()?);
//! let restored = cutpaste::density::FittedDensity::from_arrays(&record, &arrays)?;
//! assert_eq!(restored.score(test.view())?, scores);
//! # Ok(()) }
//! ```

mod custom;
mod gaussian;
mod kde;
mod ledoit_wolf;
mod serial;

pub use custom::{CustomDensity, FittedCustom};
pub use gaussian::{Covariance, FittedGaussian, GaussianParams};
pub use kde::{FittedKde, KdeBandwidth, KdeParams};
pub use ledoit_wolf::{empirical_covariance, ledoit_wolf, LEDOIT_WOLF_MIN_SAMPLES};
pub use serial::{ArrayData, DensityRecord, NamedArray};

use crate::{Error, Result};
use ndarray::{Array1, Array2, ArrayView2};
use serde::{Deserialize, Serialize};

/// An unfitted density estimator: parameters only. [`fit`](Self::fit) returns the fitted type.
pub trait DensityEstimator {
    /// The fitted estimator.
    type Fitted: FittedEstimator;
    /// Fits on training features (rows = samples of normal data, columns = dimensions).
    ///
    /// Errors: no rows → [`Error::EmptyDataset`]; no columns → [`Error::InvalidInput`]; an
    /// invalid parameter → [`Error::InvalidParam`]; NaN/inf → [`Error::NonFinite`] naming the first bad row; a
    /// covariance that cannot be inverted → [`Error::SingularCovariance`].
    fn fit(&self, features: ArrayView2<f32>) -> Result<Self::Fitted>;
}

/// A fitted density estimator.
pub trait FittedEstimator {
    /// Anomaly scores of the rows of `features`: **higher = more anomalous**.
    ///
    /// Errors: wrong number of columns → [`Error::DimensionMismatch`]; NaN/inf →
    /// [`Error::NonFinite`] naming the row. Zero rows give an empty array.
    fn score(&self, features: ArrayView2<f32>) -> Result<Array1<f32>>;
    /// Feature dimension the estimator was fitted on.
    fn dim(&self) -> usize;
    /// Number of training samples it was fitted on.
    fn n_train(&self) -> usize;
}

/// Which density estimator to fit, with its parameters. Default: [`Density::gaussian`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Density {
    /// Gaussian density estimator (GDE), score = squared Mahalanobis distance.
    Gaussian(GaussianParams),
    /// Kernel density estimator, score = −logsumexp(2γ·cos)/γ.
    Kde(KdeParams),
    /// A user-defined estimator ([`Density::custom`]). Never serialised: a detector fitted with
    /// it scores, thresholds and evaluates, but saving it is an [`Error::Unsupported`].
    #[serde(skip)]
    Custom(CustomDensity),
}

impl Default for Density {
    fn default() -> Self {
        Density::gaussian()
    }
}

impl Density {
    /// Gaussian with the defaults: L2-normalised features, Ledoit–Wolf covariance **[our choice]**.
    pub fn gaussian() -> Self {
        Density::Gaussian(GaussianParams::default())
    }

    /// KDE with the defaults: L2-normalised features, DROC bandwidth rule γ = 10 / (var · dim).
    pub fn kde() -> Self {
        Density::Kde(KdeParams::default())
    }

    /// A user-defined estimator: any [`DensityEstimator`] whose fitted type scores
    /// **higher = more anomalous**. The builder fits it on the pooled features like the
    /// provided ones (see [`CustomDensity`]).
    pub fn custom<E>(estimator: E) -> Self
    where
        E: DensityEstimator + Send + Sync + 'static,
        E::Fitted: Send + Sync + 'static,
    {
        Density::Custom(CustomDensity::new(estimator))
    }

    /// Validates the parameters without fitting ([`Error::InvalidParam`] naming the field); a
    /// custom estimator validates its own when it fits.
    pub fn check(&self) -> Result<()> {
        match self {
            Density::Gaussian(p) => p.check(),
            Density::Kde(p) => p.check(),
            Density::Custom(_) => Ok(()),
        }
    }

    /// Checks, before any features exist, that `n` training samples can fit this density: the
    /// Ledoit–Wolf Gaussian needs at least [`LEDOIT_WOLF_MIN_SAMPLES`] (with fewer its shrinkage
    /// is 0 and the covariance singular); the others fit from one sample. Errors with
    /// [`Error::SingularCovariance`], whose message says what works instead.
    pub fn check_samples(&self, n: usize) -> Result<()> {
        match self {
            Density::Gaussian(GaussianParams {
                covariance: Covariance::LedoitWolf,
                ..
            }) if n < LEDOIT_WOLF_MIN_SAMPLES => Err(Error::SingularCovariance {
                reason: format!(
                    "{n} training sample(s), but the Ledoit-Wolf covariance needs at least \
                     {LEDOIT_WOLF_MIN_SAMPLES} distinct ones"
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Fits the estimator on training features (rows = samples). See [`DensityEstimator::fit`].
    pub fn fit(&self, features: ArrayView2<f32>) -> Result<FittedDensity> {
        Ok(match self {
            Density::Gaussian(p) => FittedDensity::Gaussian(p.fit(features)?),
            Density::Kde(p) => FittedDensity::Kde(p.fit(features)?),
            Density::Custom(c) => FittedDensity::Custom(c.fit(features)?),
        })
    }
}

impl DensityEstimator for Density {
    type Fitted = FittedDensity;
    fn fit(&self, features: ArrayView2<f32>) -> Result<FittedDensity> {
        Density::fit(self, features)
    }
}

/// A fitted [`Density`].
#[derive(Clone, Debug)]
pub enum FittedDensity {
    /// Fitted Gaussian.
    Gaussian(FittedGaussian),
    /// Fitted KDE.
    Kde(FittedKde),
    /// A fitted user-defined estimator.
    Custom(FittedCustom),
}

impl FittedDensity {
    /// Anomaly scores of the rows of `features`: **higher = more anomalous**.
    /// See [`FittedEstimator::score`].
    pub fn score(&self, features: ArrayView2<f32>) -> Result<Array1<f32>> {
        match self {
            FittedDensity::Gaussian(g) => g.score(features),
            FittedDensity::Kde(k) => k.score(features),
            FittedDensity::Custom(c) => c.score(features),
        }
    }

    /// Feature dimension the estimator was fitted on.
    pub fn dim(&self) -> usize {
        match self {
            FittedDensity::Gaussian(g) => g.dim(),
            FittedDensity::Kde(k) => k.dim(),
            FittedDensity::Custom(c) => c.dim(),
        }
    }

    /// The parameters it was fitted with.
    pub fn params(&self) -> Density {
        match self {
            FittedDensity::Gaussian(g) => Density::Gaussian(g.params().clone()),
            FittedDensity::Kde(k) => Density::Kde(k.params().clone()),
            FittedDensity::Custom(c) => Density::Custom(c.density().clone()),
        }
    }
}

impl FittedEstimator for FittedDensity {
    fn score(&self, features: ArrayView2<f32>) -> Result<Array1<f32>> {
        FittedDensity::score(self, features)
    }
    fn dim(&self) -> usize {
        FittedDensity::dim(self)
    }
    fn n_train(&self) -> usize {
        match self {
            FittedDensity::Gaussian(g) => g.n_train(),
            FittedDensity::Kde(k) => k.n_train(),
            FittedDensity::Custom(c) => c.n_train(),
        }
    }
}

/// Checks training features: at least one row and one column, all values finite.
pub(crate) fn check_train(features: ArrayView2<f32>, what: &str) -> Result<()> {
    if features.nrows() == 0 {
        return Err(Error::EmptyDataset {
            path: format!("{what} (0 feature rows were given)").into(),
        });
    }
    if features.ncols() == 0 {
        return Err(Error::invalid_input(
            what,
            "features have 0 columns; pass one row of at least 1 dimension per sample",
        ));
    }
    check_finite(features, what)
}

/// Checks that `features` has `dim` columns and only finite values.
pub(crate) fn check_query(features: ArrayView2<f32>, dim: usize, what: &str) -> Result<()> {
    if features.ncols() != dim {
        return Err(Error::DimensionMismatch {
            what: format!("{what}: number of feature columns (the estimator was fitted on {dim})"),
            expected: dim,
            got: features.ncols(),
        });
    }
    check_finite(features, what)
}

fn check_finite(features: ArrayView2<f32>, what: &str) -> Result<()> {
    match features
        .outer_iter()
        .position(|row| row.iter().any(|v| !v.is_finite()))
    {
        Some(row) => Err(Error::NonFinite {
            what: what.to_string(),
            row,
        }),
        None => Ok(()),
    }
}

/// Rows as f64, optionally divided by their L2 norm (rows of norm 0 stay 0, as
/// `sklearn.preprocessing.normalize` does).
pub(crate) fn rows_f64(features: ArrayView2<f32>, l2_normalize: bool) -> Array2<f64> {
    let mut x = features.mapv(f64::from);
    if l2_normalize {
        crate::linalg::l2_normalize_rows(&mut x);
    }
    x
}
