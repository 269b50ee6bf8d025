//! Kernel density estimator in the style of the authors' earlier DROC code base (PAPER.md,
//! "Density estimators"): features are L2-normalised, the kernel is the RBF
//! exp(−γ‖f − x‖²) = exp(−2γ)·exp(2γ·cos(f, x)), and
//!
//! score(f) = −logsumexp_i(2γ · cos(f, x_i)) / γ,
//!
//! i.e. −(log Σᵢ k(f, xᵢ) + 2γ)/γ: **higher = more anomalous**. γ defaults to the DROC rule
//! γ = 10 / (var(train) · dim), where var is the variance over *all entries* of the normalised
//! training matrix (`np.var(X)`).
//!
//! Scoring is batched over query rows so that only a (block × n_train) f32 similarity matrix of
//! at most [`KDE_BLOCK_ELEMS`] entries (4 MiB) lives at a time per thread (blocks run in
//! parallel with the `parallel` feature). The cosine similarities are an
//! f32 matrix product (error ≲ 1e-6 on a score, independently of γ, since |∂score/∂cos| ≤ 2);
//! the log-sum-exp is accumulated in f64.
use super::{check_query, check_train, rows_f64, DensityEstimator, FittedEstimator};
use crate::{Error, Result};
use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

/// Maximal number of entries of the (block × n_train) similarity matrix held at once.
pub const KDE_BLOCK_ELEMS: usize = 1 << 20;

/// Bandwidth of the RBF kernel exp(−γ‖f − x‖²).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KdeBandwidth {
    /// The DROC rule γ = 10 / (var(train) · dim) (default).
    #[default]
    Droc,
    /// An explicit γ > 0.
    Gamma(f64),
}

/// Parameters of the kernel density estimator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct KdeParams {
    /// Kernel bandwidth. Default [`KdeBandwidth::Droc`].
    pub bandwidth: KdeBandwidth,
}

impl KdeParams {
    /// Uses an explicit γ (> 0) instead of the DROC rule.
    pub fn gamma(mut self, gamma: f64) -> Self {
        self.bandwidth = KdeBandwidth::Gamma(gamma);
        self
    }

    /// Uses a Gaussian-kernel bandwidth h (as scikit-learn's `KernelDensity(bandwidth = h)`):
    /// γ = 1 / (2h²).
    pub fn bandwidth(mut self, h: f64) -> Self {
        self.bandwidth = KdeBandwidth::Gamma(1.0 / (2.0 * h * h));
        self
    }

    /// Validates the parameters.
    pub fn check(&self) -> Result<()> {
        if let KdeBandwidth::Gamma(g) = self.bandwidth {
            if !g.is_finite() || g <= 0.0 {
                return Err(Error::invalid_param(
                    "gamma",
                    format!(
                        "KDE gamma must be finite and > 0 (bandwidth h > 0 gives gamma = 1/(2h^2)), got {g}"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Stores the L2-normalised training features and resolves γ.
    /// See [`DensityEstimator::fit`] for the errors; additionally the DROC rule fails with
    /// [`Error::InvalidInput`] when the training features have zero variance.
    pub fn fit(&self, features: ArrayView2<f32>) -> Result<FittedKde> {
        self.check()?;
        check_train(features, "KDE training features")?;
        let x = rows_f64(features, true); // n × d, unit rows
        let gamma = match self.bandwidth {
            KdeBandwidth::Gamma(g) => g,
            KdeBandwidth::Droc => {
                let var = x.var(0.0);
                let g = 10.0 / (var * x.ncols() as f64);
                if var.is_nan() || var <= 0.0 || !g.is_finite() {
                    return Err(Error::invalid_input(
                        "features",
                        format!(
                            "the DROC rule 10/(var*dim) is undefined: the normalised training \
                             features have variance {var}; give an explicit gamma"
                        ),
                    ));
                }
                g
            }
        };
        FittedKde::from_parts(self.clone(), x.mapv(|v| v as f32), gamma)
    }
}

impl DensityEstimator for KdeParams {
    type Fitted = FittedKde;
    fn fit(&self, features: ArrayView2<f32>) -> Result<FittedKde> {
        KdeParams::fit(self, features)
    }
}

/// A fitted KDE: the L2-normalised training features (f32) and γ.
#[derive(Clone, Debug)]
pub struct FittedKde {
    params: KdeParams,
    train: Array2<f32>,
    gamma: f64,
}

impl FittedKde {
    /// Builds a fitted KDE from already L2-normalised training rows and γ (e.g. from a checkpoint).
    pub fn from_parts(params: KdeParams, train: Array2<f32>, gamma: f64) -> Result<Self> {
        check_train(train.view(), "KDE training features")?;
        if !gamma.is_finite() || gamma <= 0.0 {
            return Err(Error::invalid_param(
                "gamma",
                format!("must be finite and > 0, got {gamma}"),
            ));
        }
        Ok(FittedKde {
            params,
            train,
            gamma,
        })
    }

    /// The parameters it was fitted with.
    pub fn params(&self) -> &KdeParams {
        &self.params
    }

    /// The resolved γ.
    pub fn gamma(&self) -> f64 {
        self.gamma
    }

    /// The L2-normalised training features (n × d).
    pub fn train_features(&self) -> &Array2<f32> {
        &self.train
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.train.ncols()
    }

    /// Number of training samples.
    pub fn n_train(&self) -> usize {
        self.train.nrows()
    }

    /// KDE scores −logsumexp(2γ·cos)/γ: **higher = more anomalous**.
    /// See [`FittedEstimator::score`].
    pub fn score(&self, features: ArrayView2<f32>) -> Result<Array1<f32>> {
        check_query(features, self.dim(), "KDE features to score")?;
        let block = (KDE_BLOCK_ELEMS / self.n_train()).max(1);
        let mut out = vec![0.0f32; features.nrows()];
        let run = |(i, chunk): (usize, &mut [f32])| {
            let start = i * block;
            self.score_block(features.slice(s![start..start + chunk.len(), ..]), chunk);
        };
        // blocks in parallel with feature `parallel`: memory ≤ threads × KDE_BLOCK_ELEMS × 4 B
        #[cfg(feature = "parallel")]
        {
            use rayon::prelude::*;
            out.par_chunks_mut(block).enumerate().for_each(run);
        }
        #[cfg(not(feature = "parallel"))]
        out.chunks_mut(block).enumerate().for_each(run);
        Ok(Array1::from_vec(out))
    }

    /// Scores one block of (checked) query rows into `out`.
    fn score_block(&self, features: ArrayView2<f32>, out: &mut [f32]) {
        let two_gamma = 2.0 * self.gamma;
        let q = rows_f64(features, true).mapv(|v| v as f32);
        // (b × d) · (d × n) → b × n cosine similarities
        let cos = q.dot(&self.train.t());
        for (o, row) in out.iter_mut().zip(cos.axis_iter(Axis(0))) {
            let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let sum: f64 = row
                .iter()
                .map(|&c| (two_gamma * (f64::from(c) - f64::from(max))).exp())
                .sum();
            let lse = two_gamma * f64::from(max) + sum.ln();
            *o = (-lse / self.gamma) as f32;
        }
    }
}

impl FittedEstimator for FittedKde {
    fn score(&self, features: ArrayView2<f32>) -> Result<Array1<f32>> {
        FittedKde::score(self, features)
    }
    fn dim(&self) -> usize {
        FittedKde::dim(self)
    }
    fn n_train(&self) -> usize {
        FittedKde::n_train(self)
    }
}
