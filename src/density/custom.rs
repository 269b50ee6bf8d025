//! User-defined density estimators: anything implementing [`DensityEstimator`] (with a
//! [`FittedEstimator`]) plugs into the builder through [`Density::custom`](super::Density::custom).
use super::{check_query, check_train, DensityEstimator, FittedEstimator};
use crate::{Error, Result};
use ndarray::{Array1, ArrayView2};
use std::fmt;
use std::sync::Arc;

/// A user-defined estimator held by [`Density::Custom`](super::Density::Custom): the estimator
/// behind an `Arc` (cloning shares it) plus its type name for messages. Two values are equal
/// when they share one estimator.
///
///
/// ```
/// use cutpaste::density::{Density, DensityEstimator, FittedDensity, FittedEstimator};
/// use ndarray::{Array1, ArrayView2, Axis};
///
/// /// Score = Euclidean distance to the training mean (higher = more anomalous).
/// struct MeanDistance;
/// struct FittedMean(Array1<f32>, usize);
///
/// impl DensityEstimator for MeanDistance {
///     type Fitted = FittedMean;
///     fn fit(&self, x: ArrayView2<f32>) -> cutpaste::Result<FittedMean> {
///         Ok(FittedMean(x.mean_axis(Axis(0)).expect("rows are checked"), x.nrows()))
///     }
/// }
/// impl FittedEstimator for FittedMean {
///     fn score(&self, x: ArrayView2<f32>) -> cutpaste::Result<Array1<f32>> {
///         Ok(x.rows().into_iter().map(|r| (&r - &self.0).mapv(|v| v * v).sum().sqrt()).collect())
///     }
///     fn dim(&self) -> usize { self.0.len() }
///     fn n_train(&self) -> usize { self.1 }
/// }
///
/// # fn main() -> cutpaste::Result<()> {
/// let train = ndarray::array![[0.0f32, 0.0], [2.0, 0.0]];
/// let fitted = Density::custom(MeanDistance).fit(train.view())?; // or DetectorParams::density
/// assert_eq!(fitted.score(ndarray::array![[1.0f32, 3.0]].view())?[0], 3.0);
/// // a checkpoint cannot store it: saving is a typed error that says what to do
/// assert_eq!(fitted.record().unwrap_err().kind(), cutpaste::ErrorKind::Unsupported);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CustomDensity {
    name: &'static str,
    estimator: Arc<dyn ErasedEstimator>,
}

/// [`DensityEstimator`] without its associated type, so that it fits behind a pointer.
trait ErasedEstimator: Send + Sync {
    fn fit(&self, features: ArrayView2<f32>) -> Result<Arc<dyn FittedEstimator + Send + Sync>>;
}

impl<E> ErasedEstimator for E
where
    E: DensityEstimator + Send + Sync,
    E::Fitted: Send + Sync + 'static,
{
    fn fit(&self, features: ArrayView2<f32>) -> Result<Arc<dyn FittedEstimator + Send + Sync>> {
        Ok(Arc::new(DensityEstimator::fit(self, features)?))
    }
}

impl CustomDensity {
    /// Wraps `estimator`.
    pub fn new<E>(estimator: E) -> Self
    where
        E: DensityEstimator + Send + Sync + 'static,
        E::Fitted: Send + Sync + 'static,
    {
        Self {
            name: std::any::type_name::<E>(),
            estimator: Arc::new(estimator),
        }
    }

    /// The estimator's type name, e.g. `my_crate::MeanDistance`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Fits on `features` after the checks every density gets (at least one row and one
    /// column, finite values); the fitted estimator must keep the feature dimension.
    pub fn fit(&self, features: ArrayView2<f32>) -> Result<FittedCustom> {
        check_train(features, "training features")?;
        let fitted = self.estimator.fit(features)?;
        if fitted.dim() != features.ncols() {
            return Err(Error::DimensionMismatch {
                what: format!(
                    "dimension reported by the fitted custom density `{}`",
                    self.name
                ),
                expected: features.ncols(),
                got: fitted.dim(),
            });
        }
        Ok(FittedCustom {
            density: self.clone(),
            fitted,
        })
    }
}

impl PartialEq for CustomDensity {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.estimator, &other.estimator)
    }
}

impl fmt::Debug for CustomDensity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CustomDensity").field(&self.name).finish()
    }
}

/// A fitted [`CustomDensity`]: the user's [`FittedEstimator`] behind an `Arc`.
#[derive(Clone)]
pub struct FittedCustom {
    density: CustomDensity,
    fitted: Arc<dyn FittedEstimator + Send + Sync>,
}

impl FittedCustom {
    /// The unfitted estimator it came from.
    pub fn density(&self) -> &CustomDensity {
        &self.density
    }

    /// The error saving it gives: checkpoints store the provided densities only.
    pub(crate) fn unsaveable(&self) -> Error {
        Error::unsupported(
            format!(
                "saving a detector fitted with the user-defined density `{}`",
                self.density.name
            ),
            "checkpoints store the provided densities only; refit with Density::gaussian() or \
             Density::kde() to save one, or keep this detector in memory (it scores, evaluates \
             and thresholds like any other)",
        )
    }
}

impl FittedEstimator for FittedCustom {
    /// The user's scores (**higher = more anomalous**), after the query checks every density
    /// does; a score count that is not one per row is an [`Error::DimensionMismatch`].
    fn score(&self, features: ArrayView2<f32>) -> Result<Array1<f32>> {
        check_query(features, self.fitted.dim(), "query features")?;
        let scores = self.fitted.score(features)?;
        if scores.len() != features.nrows() {
            return Err(Error::DimensionMismatch {
                what: format!(
                    "number of scores from the custom density `{}` (one per row)",
                    self.density.name
                ),
                expected: features.nrows(),
                got: scores.len(),
            });
        }
        Ok(scores)
    }
    fn dim(&self) -> usize {
        self.fitted.dim()
    }
    fn n_train(&self) -> usize {
        self.fitted.n_train()
    }
}

impl fmt::Debug for FittedCustom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FittedCustom")
            .field("density", &self.density.name)
            .field("dim", &self.fitted.dim())
            .field("n_train", &self.fitted.n_train())
            .finish()
    }
}
