//! Small linear-algebra helpers on `ndarray` shared by the density estimators, the patch
//! localizer and the embedding map, so that each exists once.
use ndarray::{Array2, NdFloat};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_get_unit_norm_and_zero_rows_stay_zero() {
        let mut x = ndarray::arr2(&[[3.0f32, 4.0], [0.0, 0.0]]);
        l2_normalize_rows(&mut x);
        assert_eq!(x, ndarray::arr2(&[[0.6f32, 0.8], [0.0, 0.0]]));
        let mut y = ndarray::arr2(&[[1.0f64, 1.0, 1.0, 1.0]]);
        l2_normalize_rows(&mut y);
        assert_eq!(y, ndarray::arr2(&[[0.5f64, 0.5, 0.5, 0.5]]));
    }
}
