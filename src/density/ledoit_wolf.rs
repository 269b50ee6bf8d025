//! Covariance estimators on centred f64 data: the empirical (maximum-likelihood, divided by n)
//! covariance and Ledoit–Wolf shrinkage.
//!
//! Ledoit & Wolf, "A well-conditioned estimator for large-dimensional covariance matrices",
//! J. Multivariate Analysis 88 (2004): Σ̂ = (1 − δ)·S + δ·μ·I with μ = tr(S)/d and the
//! shrinkage δ estimated from the data. The estimate of δ follows the same formula as
//! scikit-learn's `LedoitWolf` (`assume_centered = False`), so the fixtures match to rounding.
use ndarray::{Array2, ArrayView2, Axis};

/// Fewest distinct samples for which the Ledoit–Wolf shrinkage can be positive: with one sample
/// (or identical ones) the covariance is 0, and with two, β̃ below is exactly 0 (each centred row
/// is ±half their difference, so Σ‖x_k‖⁴/n = ‖S‖²_F), leaving the rank-1 empirical covariance.
pub const LEDOIT_WOLF_MIN_SAMPLES: usize = 3;

/// Empirical covariance `Xᵀ X / n` of **already centred** rows `x` (n × d).
pub fn empirical_covariance(x: ArrayView2<f64>) -> Array2<f64> {
    let n = x.nrows().max(1) as f64;
    // (d × n) · (n × d) → d × d
    let mut cov = x.t().dot(&x);
    cov /= n;
    cov
}

/// Ledoit–Wolf shrunk covariance of **already centred** rows `x` (n × d) and the shrinkage
/// coefficient δ ∈ [0, 1].
///
/// With S the empirical covariance, μ = tr(S)/d, rows x_k:
/// - β̃ = (Σ_k ‖x_k‖⁴ / n − ‖S‖²_F) / (d·n)   (scikit-learn computes Σ_k‖x_k‖⁴ as the sum of
///   `(X²)ᵀ X²`, which is the same number),
/// - δ̃ = (‖S‖²_F − 2μ·tr(S) + d·μ²) / d = ‖S − μI‖²_F / d,
/// - δ = min(β̃, δ̃) / δ̃ (0 when β̃ = 0 or δ̃ = 0).
///
/// For d = 1 the shrinkage is 0, as in scikit-learn.
pub fn ledoit_wolf(x: ArrayView2<f64>) -> (Array2<f64>, f64) {
    let (n, d) = x.dim();
    let mut cov = empirical_covariance(x);
    if d <= 1 || n == 0 {
        return (cov, 0.0);
    }
    let (nf, df) = (n as f64, d as f64);
    let trace: f64 = cov.diag().sum();
    let mu = trace / df;
    let frob2: f64 = cov.iter().map(|v| v * v).sum();
    let row_norm4: f64 = x
        .axis_iter(Axis(0))
        .map(|r| {
            let s = r.dot(&r);
            s * s
        })
        .sum();
    let beta = (row_norm4 / nf - frob2) / (df * nf);
    let delta = (frob2 - 2.0 * mu * trace + df * mu * mu) / df;
    let beta = beta.min(delta);
    let shrinkage = if beta == 0.0 || delta <= 0.0 {
        0.0
    } else {
        beta / delta
    };
    cov *= 1.0 - shrinkage;
    cov.diag_mut().mapv_inplace(|v| v + shrinkage * mu);
    (cov, shrinkage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn empirical_covariance_by_hand() {
        // centred 2-d data: rows (1, 2), (-1, -2), (1, -2), (-1, 2)
        let x = array![[1.0, 2.0], [-1.0, -2.0], [1.0, -2.0], [-1.0, 2.0]];
        let c = empirical_covariance(x.view());
        assert_eq!(c, array![[1.0, 0.0], [0.0, 4.0]]);
    }

    #[test]
    fn ledoit_wolf_by_hand_and_bounds() {
        // Same data. S = diag(1, 4), μ = 2.5, ‖S‖² = 17, every ‖x_k‖⁴ = 25.
        // β̃ = (25 − 17) / (2·4) = 1; δ̃ = (17 − 2·2.5·5 + 2·6.25)/2 = 2.25; δ = 1/2.25.
        let x = array![[1.0, 2.0], [-1.0, -2.0], [1.0, -2.0], [-1.0, 2.0]];
        let (c, s) = ledoit_wolf(x.view());
        let want = 1.0 / 2.25;
        assert!((s - want).abs() < 1e-15, "{s}");
        assert!((c[[0, 0]] - ((1.0 - want) * 1.0 + want * 2.5)).abs() < 1e-15);
        assert!((c[[1, 1]] - ((1.0 - want) * 4.0 + want * 2.5)).abs() < 1e-15);
        assert_eq!(c[[0, 1]], 0.0);
        // one dimension: no shrinkage
        let (_, s1) = ledoit_wolf(array![[1.0], [-1.0]].view());
        assert_eq!(s1, 0.0);
    }
}
