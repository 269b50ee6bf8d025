//! Gaussian density estimator (GDE, PAPER.md "Density estimators"; CutPaste §3.3, Eq. 2):
//! score(f) = (f − μ)ᵀ Σ⁻¹ (f − μ), the squared Mahalanobis distance. Computed in f64.
use super::ledoit_wolf::{empirical_covariance, ledoit_wolf};
use super::{check_query, check_train, rows_f64, DensityEstimator, FittedEstimator};
use crate::linalg::checked_cholesky;
use crate::{Error, Result};
use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use ndarray_linalg::{Diag, SolveTriangularInplace, UPLO};
use serde::{Deserialize, Serialize};

/// Rows scored per block: bounds the temporary (block × dim) f64 buffers.
const SCORE_BLOCK: usize = 2048;

/// How the covariance matrix is estimated.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Covariance {
    /// Ledoit–Wolf shrinkage towards a scaled identity (scikit-learn's `LedoitWolf`). Fits even
    /// when there are fewer samples than dimensions. The crate's default **[our choice]**.
    #[default]
    LedoitWolf,
    /// Empirical (maximum-likelihood, divided by n) covariance plus `reg_covar` on the diagonal,
    /// as scikit-learn's `GaussianMixture` does (the paper authors' stack; default 1e-6).
    Empirical {
        /// Added to every diagonal entry; must be finite and ≥ 0.
        reg_covar: f64,
    },
}

impl Covariance {
    /// `Empirical { reg_covar: 1e-6 }`, scikit-learn's `GaussianMixture` default.
    pub fn empirical() -> Self {
        Covariance::Empirical { reg_covar: 1e-6 }
    }
}

/// Parameters of the Gaussian density estimator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GaussianParams {
    /// Covariance estimator. Default: [`Covariance::LedoitWolf`].
    pub covariance: Covariance,
    /// Divide every feature row by its L2 norm before fitting and scoring (rows of norm 0 stay 0).
    /// Default `true`, as the paper's authors did.
    pub l2_normalize: bool,
}

impl Default for GaussianParams {
    fn default() -> Self {
        GaussianParams {
            covariance: Covariance::LedoitWolf,
            l2_normalize: true,
        }
    }
}

impl GaussianParams {
    /// Sets the covariance estimator.
    pub fn covariance(mut self, covariance: Covariance) -> Self {
        self.covariance = covariance;
        self
    }

    /// Sets whether rows are L2-normalised.
    pub fn l2_normalize(mut self, on: bool) -> Self {
        self.l2_normalize = on;
        self
    }

    /// Validates the parameters.
    pub fn check(&self) -> Result<()> {
        if let Covariance::Empirical { reg_covar } = self.covariance {
            if !reg_covar.is_finite() || reg_covar < 0.0 {
                return Err(Error::invalid_param(
                    "reg_covar",
                    format!("must be finite and >= 0 (default 1e-6), got {reg_covar}"),
                ));
            }
        }
        Ok(())
    }
}

impl DensityEstimator for GaussianParams {
    type Fitted = FittedGaussian;
    fn fit(&self, features: ArrayView2<f32>) -> Result<FittedGaussian> {
        GaussianParams::fit(self, features)
    }
}

impl GaussianParams {
    /// Fits mean and covariance on training features (rows = samples), in f64.
    /// See [`DensityEstimator::fit`] for the errors.
    pub fn fit(&self, features: ArrayView2<f32>) -> Result<FittedGaussian> {
        self.check()?;
        check_train(features, "Gaussian training features")?;
        let n = features.nrows();
        let mut x = rows_f64(features, self.l2_normalize); // n × d
        let mean = x.mean_axis(Axis(0)).ok_or_else(|| Error::EmptyDataset {
            path: "Gaussian training features".into(),
        })?;
        x -= &mean;
        let (cov, shrinkage) = match self.covariance {
            Covariance::LedoitWolf => {
                let (c, s) = ledoit_wolf(x.view());
                (c, Some(s))
            }
            Covariance::Empirical { reg_covar } => {
                let mut c = empirical_covariance(x.view());
                c.diag_mut().mapv_inplace(|v| v + reg_covar);
                (c, None)
            }
        };
        FittedGaussian::from_parts(self.clone(), mean, cov, shrinkage, n)
    }
}

/// A fitted Gaussian: mean μ, covariance Σ and its lower Cholesky factor L (Σ = L Lᵀ); the
/// squared Mahalanobis distance is ‖z‖² with L z = f − μ (a triangular solve, LAPACK `trtrs`).
#[derive(Clone, Debug)]
pub struct FittedGaussian {
    params: GaussianParams,
    mean: Array1<f64>,
    covariance: Array2<f64>,
    /// L, lower triangular (d × d), column-major so LAPACK uses it without a copy.
    chol: Array2<f64>,
    shrinkage: Option<f64>,
    n_train: usize,
}

impl FittedGaussian {
    /// Builds a fitted Gaussian from its mean and covariance (e.g. read back from a checkpoint).
    ///
    /// Errors: shapes that disagree → [`Error::DimensionMismatch`]; non-finite values →
    /// [`Error::NonFinite`]; a covariance that is not numerically positive definite →
    /// [`Error::SingularCovariance`] (pivot of the Cholesky factor below d·ε·max Σᵢᵢ).
    pub fn from_parts(
        params: GaussianParams,
        mean: Array1<f64>,
        covariance: Array2<f64>,
        shrinkage: Option<f64>,
        n_train: usize,
    ) -> Result<Self> {
        let d = mean.len();
        for (what, got) in [
            ("covariance rows", covariance.nrows()),
            ("covariance columns", covariance.ncols()),
        ] {
            if got != d {
                return Err(Error::DimensionMismatch {
                    what: format!("Gaussian {what} (must equal the mean's length)"),
                    expected: d,
                    got,
                });
            }
        }
        if let Some(row) = covariance
            .outer_iter()
            .position(|r| r.iter().any(|v| !v.is_finite()))
        {
            return Err(Error::NonFinite {
                what: "Gaussian covariance".into(),
                row,
            });
        }
        if mean.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "Gaussian mean".into(),
                row: 0,
            });
        }
        let chol = checked_cholesky(&covariance, n_train)?;
        Ok(FittedGaussian {
            params,
            mean,
            covariance,
            chol,
            shrinkage,
            n_train,
        })
    }

    /// The parameters it was fitted with.
    pub fn params(&self) -> &GaussianParams {
        &self.params
    }

    /// Mean μ of the (normalised) training features.
    pub fn mean(&self) -> &Array1<f64> {
        &self.mean
    }

    /// Covariance Σ (after shrinkage / regularisation).
    pub fn covariance(&self) -> &Array2<f64> {
        &self.covariance
    }

    /// The lower Cholesky factor L of Σ (Σ = L Lᵀ, upper triangle 0), `[d, d]` column-major:
    /// for other implementations of the same Gaussian (the differentiable one of GradCAM), so
    /// that Σ is factorised once.
    pub(crate) fn cholesky_factor(&self) -> &Array2<f64> {
        &self.chol
    }

    /// Ledoit–Wolf shrinkage coefficient, `None` for the empirical covariance.
    pub fn shrinkage(&self) -> Option<f64> {
        self.shrinkage
    }

    /// Squared Mahalanobis distances in f64: **higher = more anomalous**.
    pub fn score_f64(&self, features: ArrayView2<f32>) -> Result<Array1<f64>> {
        check_query(features, self.dim(), "Gaussian features to score")?;
        let mut out = Array1::zeros(features.nrows());
        for start in (0..features.nrows()).step_by(SCORE_BLOCK) {
            let end = (start + SCORE_BLOCK).min(features.nrows());
            let mut x = rows_f64(features.slice(s![start..end, ..]), self.params.l2_normalize);
            x -= &self.mean;
            // (b × d) row-major → (d × b) column-major without a copy; solve L Z = (X − μ)ᵀ
            let mut z = x.reversed_axes();
            self.chol
                .solve_triangular_inplace(UPLO::Lower, Diag::NonUnit, &mut z)?;
            for (o, col) in out
                .slice_mut(s![start..end])
                .iter_mut()
                .zip(z.axis_iter(Axis(1)))
            {
                *o = col.dot(&col);
            }
        }
        Ok(out)
    }
}

impl FittedGaussian {
    /// Squared Mahalanobis distances: **higher = more anomalous**. See [`FittedEstimator::score`].
    pub fn score(&self, features: ArrayView2<f32>) -> Result<Array1<f32>> {
        Ok(self.score_f64(features)?.mapv(|v| v as f32))
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Number of training samples.
    pub fn n_train(&self) -> usize {
        self.n_train
    }
}

impl FittedEstimator for FittedGaussian {
    fn score(&self, features: ArrayView2<f32>) -> Result<Array1<f32>> {
        FittedGaussian::score(self, features)
    }
    fn dim(&self) -> usize {
        FittedGaussian::dim(self)
    }
    fn n_train(&self) -> usize {
        FittedGaussian::n_train(self)
    }
}
