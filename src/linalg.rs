//! Small linear-algebra helpers on `ndarray` shared by the density estimators, the patch
//! localizer and the embedding map, so that each exists once (the Gaussians' factorisation
//! included: [`checked_cholesky`], [`precision_matrix`]).
use crate::error::{Error, Result};
use ndarray::{Array1, Array2, ArrayView2, Axis, NdFloat, ShapeBuilder};
use ndarray_linalg::{Cholesky, CholeskyFactorized, Eigh, InverseC, UPLO};

/// Divides each row of `x` by its L2 norm in place (PAPER.md "GDE: L2-normalise features");
/// rows of norm 0 stay 0, as `sklearn.preprocessing.normalize` does. The norm is computed in
/// the array's own precision.
pub(crate) fn l2_normalize_rows<A: NdFloat>(x: &mut Array2<A>) {
    for mut row in x.outer_iter_mut() {
        let norm = row.dot(&row).sqrt();
        if norm > A::zero() {
            row /= norm;
        }
    }
}

/// That every value of the `[n, d]` features of a trained network is finite. NaN/inf there
/// means the training diverged: a network trained on batches of one image (its 2–3 views) at a
/// 32 px working size got gradients of 1e3–1e4 through BatchNorm over those few values at the
/// deepest layers' 1×1–2×2 maps, and one SGD step made its weights blow up. The error is an
/// [`Error::InvalidInput`] named `features` that says so and how to avoid it.
pub(crate) fn finite_features<A: NdFloat>(x: ArrayView2<A>) -> Result<()> {
    let (n, d) = x.dim();
    let Some(bad) = x.iter().position(|v| !v.is_finite()) else {
        return Ok(());
    };
    Err(Error::invalid_input(
        "features",
        format!(
            "{} of the {n}x{d} features are not finite (first: row {}): the trained network \
             produced NaN/inf, so its training diverged (seen with one image a batch at a 32 px \
             working size); use more images a batch, a lower learning rate or a larger working size",
            x.iter().filter(|v| !v.is_finite()).count(),
            bad / d.max(1)
        ),
    ))
}

/// Principal component analysis of the rows of `x` (`[n, d]`, n ≥ 1): their mean `[d]` and the
/// `k` leading principal axes as the orthonormal columns of a `[d, k]` matrix, largest variance
/// first, from the eigendecomposition of the `d × d` covariance (O(n·d² + d³)). Each axis's sign
/// is LAPACK's; callers that need a fixed sign choose it. Needs `k <= d`.
pub(crate) fn principal_axes(x: ArrayView2<f64>, k: usize) -> Result<(Array1<f64>, Array2<f64>)> {
    let (n, d) = x.dim();
    debug_assert!(k <= d, "principal_axes: k = {k} > d = {d}");
    // LAPACK's eigensolver fails on non-finite values with a bare return code
    finite_features(x)?;
    let mean = x.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(d));
    let xc = &x - &mean;
    // [d, n] · [n, d] -> [d, d]
    let cov = xc.t().dot(&xc) / n.max(1) as f64;
    let (_, vecs) = cov.eigh(UPLO::Lower)?; // eigenvalues ascending
                                            // the k last columns, largest eigenvalue first
    let axes = Array2::from_shape_fn((d, k), |(r, c)| vecs[[r, d - 1 - c]]);
    Ok((mean, axes))
}

/// The lower Cholesky factor L of the covariance `cov` (Σ = L Lᵀ, column-major, upper triangle
/// 0) of `n` samples, or [`Error::SingularCovariance`] when it is not numerically positive
/// definite: a failed factorisation, or a pivot `L_ii²` below `d·ε·max Σ_ii`.
pub(crate) fn checked_cholesky(cov: &Array2<f64>, n: usize) -> Result<Array2<f64>> {
    let d = cov.nrows();
    let l = cov
        .cholesky(UPLO::Lower)
        .map_err(|e| Error::SingularCovariance {
            reason: format!(
                "Cholesky factorisation of the {d}x{d} covariance of {n} samples failed: {e}"
            ),
        })?;
    let max_diag = cov.diag().iter().fold(0.0f64, |m, &v| m.max(v));
    let tol = d as f64 * f64::EPSILON * max_diag;
    if let Some((i, p)) = l
        .diag()
        .iter()
        .map(|v| v * v)
        .enumerate()
        .find(|(_, p)| p.is_nan() || *p <= tol)
    {
        return Err(Error::SingularCovariance {
            reason: format!(
                "Cholesky pivot {i} of the {d}x{d} covariance of {n} samples is {p:e}, below the \
                 tolerance {tol:e} (too few distinct samples, or a constant feature?)"
            ),
        });
    }
    let mut col_major = Array2::zeros((d, d).f());
    col_major.assign(&l);
    Ok(col_major)
}

/// The precision matrix Σ⁻¹ of the covariance `cov` of `n` samples, from its
/// [`checked_cholesky`] factor (LAPACK `potri`), symmetric; the same errors.
pub(crate) fn precision_matrix(cov: &Array2<f64>, n: usize) -> Result<Array2<f64>> {
    let factor = checked_cholesky(cov, n)?;
    Ok(CholeskyFactorized {
        factor,
        uplo: UPLO::Lower,
    }
    .invc()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_features_are_a_named_error_with_count_and_first_row() {
        let mut x = Array2::<f32>::zeros((3, 4));
        assert!(finite_features(x.view()).is_ok());
        x[[1, 2]] = f32::NAN;
        x[[2, 0]] = f32::INFINITY;
        match finite_features(x.view()) {
            Err(Error::InvalidInput { name, reason }) => {
                assert_eq!(name, "features");
                assert!(reason.starts_with("2 of the 3x4 features"), "{reason}");
                assert!(reason.contains("first: row 1"), "{reason}");
                assert!(reason.contains("diverged"), "{reason}");
            }
            other => panic!("expected the features error, got {other:?}"),
        }
        // the PCA refuses them by the same error, before LAPACK sees them
        let y = x.mapv(f64::from);
        assert!(matches!(
            principal_axes(y.view(), 1),
            Err(Error::InvalidInput { name, .. }) if name == "features"
        ));
    }

    #[test]
    fn rows_get_unit_norm_and_zero_rows_stay_zero() {
        let mut x = ndarray::arr2(&[[3.0f32, 4.0], [0.0, 0.0]]);
        l2_normalize_rows(&mut x);
        assert_eq!(x, ndarray::arr2(&[[0.6f32, 0.8], [0.0, 0.0]]));
        let mut y = ndarray::arr2(&[[1.0f64, 1.0, 1.0, 1.0]]);
        l2_normalize_rows(&mut y);
        assert_eq!(y, ndarray::arr2(&[[0.5f64, 0.5, 0.5, 0.5]]));
    }

    #[test]
    fn precision_is_the_inverse_and_singular_covariances_are_typed_errors() {
        let cov = ndarray::arr2(&[[4.0, 2.0, 0.4], [2.0, 3.0, 0.5], [0.4, 0.5, 1.0]]);
        let p = precision_matrix(&cov, 10).unwrap();
        let eye = cov.dot(&p);
        for ((i, j), v) in eye.indexed_iter() {
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((v - want).abs() < 1e-12, "({i}, {j}): {v}");
        }
        assert_eq!(p, p.t());
        let l = checked_cholesky(&cov, 10).unwrap();
        assert_eq!(l[[0, 1]], 0.0);
        assert!((l.dot(&l.t()) - &cov).iter().all(|v| v.abs() < 1e-12));
        let singular = ndarray::arr2(&[[1.0, 1.0], [1.0, 1.0]]);
        assert!(matches!(
            precision_matrix(&singular, 2),
            Err(Error::SingularCovariance { .. })
        ));
    }

    #[test]
    fn principal_axes_of_an_elongated_cloud() {
        // points along (1, 1) with a little spread along (1, -1), centred at (2, 3)
        let x = Array2::from_shape_fn((50, 2), |(i, j)| {
            // each t twice, once with each sign of e: t and e uncorrelated
            let t = (i / 2) as f64 - 12.0;
            let e = if i % 2 == 0 { 0.1 } else { -0.1 };
            [2.0, 3.0][j] + t + if j == 0 { e } else { -e }
        });
        let (mean, axes) = principal_axes(x.view(), 2).unwrap();
        assert!((mean[0] - 2.0).abs() < 1e-12 && (mean[1] - 3.0).abs() < 1e-12);
        let h = std::f64::consts::FRAC_1_SQRT_2;
        assert!((axes[[0, 0]].abs() - h).abs() < 1e-9);
        assert!(
            (axes[[0, 0]] - axes[[1, 0]]).abs() < 1e-9,
            "first axis along (1, 1)"
        );
        assert!(
            (axes[[0, 1]] + axes[[1, 1]]).abs() < 1e-9,
            "second axis along (1, -1)"
        );
        assert!((axes.column(0).dot(&axes.column(1))).abs() < 1e-12);
    }
}
