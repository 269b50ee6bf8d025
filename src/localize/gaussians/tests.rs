//! Tests of the patch Gaussians against hand-computed and directly computed oracles.
use super::*;

#[test]
fn per_location_scores_match_a_hand_gaussian() {
    // 2 cells, d = 2 (identity projection); cell 1 data has a larger spread.
    let z = Array3::from_shape_fn((40, 2, 2), |(i, c, k)| {
        let v = ((i * 7 + k * 3) % 10) as f32 - 4.5;
        v * (1.0 + c as f32)
    });
    let g = PatchGaussians::fit(
        PatchDensity::PerLocation,
        PatchCovariance::Full,
        Array1::zeros(2),
        Array2::eye(2),
        z.view(),
    )
    .unwrap();
    assert_eq!(g.memory_bytes(), PatchGaussians::estimate_bytes(2, 2, 2));
    // Oracle: the stored precision inverts the Ledoit–Wolf covariance (+ REG_COVAR) of the
    // cell's rows, computed here without gaussian() (an oracle built on gaussian() itself
    // cannot catch a wrong inverse).
    let x: Array2<f64> = z.slice(s![.., 1, ..]).mapv(f64::from);
    let centred = &x - &x.mean_axis(Axis(0)).unwrap();
    let (mut cov, _) = ledoit_wolf(centred.view());
    cov.diag_mut().mapv_inplace(|v| v + REG_COVAR);
    assert!(
        cov[[0, 1]].abs() > 0.1,
        "the cell's dimensions are correlated"
    );
    let stored: Array2<f64> = g.precisions.slice(s![1, .., ..]).mapv(f64::from);
    let eye = cov.dot(&stored);
    for ((i, j), v) in eye.indexed_iter() {
        let want = if i == j { 1.0 } else { 0.0 };
        assert!((v - want).abs() < 1e-5, "Σ·P at ({i}, {j}) is {v}");
    }
    let (m, p) = gaussian(x, PatchCovariance::Full).unwrap();
    let q = Array1::from_vec(vec![1.0f64, -2.0]);
    let diff = &q - &m;
    let want = diff.dot(&p.dot(&diff));
    let got: Array2<f64> = g.precisions.slice(s![1, .., ..]).mapv(f64::from);
    let got = diff.dot(&got.dot(&diff));
    assert!((want - got).abs() < 1e-4 * want.abs().max(1.0));
}

#[test]
fn tied_scores_use_cell_means_and_the_residual_covariance() {
    // 30 images, 3 cells, d = 2: cells differ by their means only
    let z = Array3::from_shape_fn((30, 3, 2), |(i, c, k)| {
        let noise = ((i * 13 + k * 7 + c) % 11) as f32 / 11.0 - 0.5;
        10.0 * c as f32 + noise * (1.0 + k as f32)
    });
    let g = PatchGaussians::fit(
        PatchDensity::Tied,
        PatchCovariance::Full,
        Array1::zeros(2),
        Array2::eye(2),
        z.view(),
    )
    .unwrap();
    assert_eq!(g.precisions.dim(), (1, 2, 2));
    assert_eq!(g.means.dim(), (3, 2));
    // Oracle: residuals of every (image, cell) from its cell mean, then the same Gaussian
    let means = z.mean_axis(Axis(0)).unwrap();
    let resid = Array2::from_shape_fn((90, 2), |(r, k)| {
        f64::from(z[[r / 3, r % 3, k]] - means[[r % 3, k]])
    });
    let (_, p) = gaussian(resid, PatchCovariance::Full).unwrap();
    let q = Array2::from_shape_vec((3, 2), vec![0.3f32, -0.2, 10.0, 0.0, 25.0, 20.0]).unwrap();
    let got = g.score(&q.clone()).unwrap();
    for c in 0..3 {
        // score() L2-normalises raw rows first: apply the same to the oracle's input
        let row = q.row(c).mapv(f64::from);
        let row = &row / row.dot(&row).sqrt();
        let diff = &row - &means.row(c).mapv(f64::from);
        let want = diff.dot(&p.dot(&diff));
        assert!(
            (f64::from(got[c]) - want).abs() < 1e-3 * want.max(1.0),
            "cell {c}: {} vs {want}",
            got[c]
        );
    }
    // a shifted cell-0 feature scores far higher at cell 0 than the same value at cell 1's mean
    assert!(got[2] > got[0]);
}

#[test]
fn tied_normalized_divides_each_cell_by_its_mean_training_score() {
    // 20 images, 2 cells, d = 2: cell 1 varies 3× more than cell 0
    let z = Array3::from_shape_fn((20, 2, 2), |(i, c, k)| {
        let noise = ((i * 7 + k * 5 + c) % 9) as f32 / 9.0 - 0.45;
        noise * if c == 1 { 3.0 } else { 1.0 }
    });
    let fit = |kind| {
        PatchGaussians::fit(
            kind,
            PatchCovariance::Full,
            Array1::zeros(2),
            Array2::eye(2),
            z.view(),
        )
    };
    let tied = fit(PatchDensity::Tied).unwrap();
    let norm = fit(PatchDensity::TiedNormalized).unwrap();
    assert_eq!(norm.kind(), PatchDensity::TiedNormalized);
    // Oracle by hand: in-sample squared distances under the tied Gaussian, per cell
    let p: Array2<f64> = tied.precisions.index_axis(Axis(0), 0).mapv(f64::from);
    let mut sums = [0.0f64; 2];
    for i in 0..20 {
        for (c, sum) in sums.iter_mut().enumerate() {
            let diff = Array1::from_shape_fn(2, |k| f64::from(z[[i, c, k]] - tied.means[[c, k]]));
            *sum += diff.dot(&p.dot(&diff));
        }
    }
    let overall = (sums[0] + sums[1]) / 40.0;
    let want: Vec<f64> = sums
        .iter()
        .map(|s| (s + SCALE_PRIOR * overall) / (20.0 + SCALE_PRIOR) / overall)
        .collect();
    let got = norm.scales.as_ref().unwrap();
    for c in 0..2 {
        assert!(
            (f64::from(got[c]) - want[c]).abs() < 1e-4,
            "{got} vs {want:?}"
        );
    }
    assert!(
        got[1] > 2.0 * got[0],
        "the noisier cell gets the larger divisor: {got}"
    );
    // scores are the tied scores divided by the divisors
    let q = Array2::from_shape_vec((2, 2), vec![0.6f32, 0.8, -0.8, 0.6]).unwrap();
    let (a, b) = (tied.score(&q).unwrap(), norm.score(&q).unwrap());
    for c in 0..2 {
        assert!((b[c] - a[c] / got[c]).abs() <= 1e-5 * a[c].abs().max(1.0));
    }
    // and the divisors survive the checkpoint arrays
    let back = PatchGaussians::from_arrays(PatchDensity::TiedNormalized, &norm.to_arrays());
    assert_eq!(back.unwrap(), norm);
    let tied_arrays = tied.to_arrays();
    assert!(PatchGaussians::from_arrays(PatchDensity::TiedNormalized, &tied_arrays).is_err());
}

#[test]
fn diagonal_covariance_scores_each_dimension_by_its_variance() {
    // one cell, d = 2, strongly correlated dimensions: the diagonal precision ignores the
    // correlation and is 1 / (Ledoit–Wolf variance + REG_COVAR) per dimension
    let z = Array3::from_shape_fn((50, 1, 2), |(i, _, k)| {
        let t = (i % 10) as f32 - 4.5;
        t * (1.0 + k as f32) + 0.1 * ((i * 7 % 5) as f32 - 2.0)
    });
    let fit = |cov| {
        PatchGaussians::fit(
            PatchDensity::PerLocation,
            cov,
            Array1::zeros(2),
            Array2::eye(2),
            z.view(),
        )
        .unwrap()
    };
    let (diag, full) = (fit(PatchCovariance::Diagonal), fit(PatchCovariance::Full));
    let x: Array2<f64> = z.slice(s![.., 0, ..]).mapv(f64::from);
    let centred = &x - &x.mean_axis(Axis(0)).unwrap();
    let (cov, _) = ledoit_wolf(centred.view());
    let p = diag.precisions.index_axis(Axis(0), 0);
    for k in 0..2 {
        let want = 1.0 / (cov[[k, k]] + REG_COVAR);
        assert!((f64::from(p[[k, k]]) - want).abs() < 1e-5 * want, "{p:?}");
    }
    assert_eq!((p[[0, 1]], p[[1, 0]]), (0.0, 0.0));
    // the full precision has the correlation: off-diagonal entries far from 0
    let q = full.precisions.index_axis(Axis(0), 0);
    assert!(q[[0, 1]].abs() > 0.1 * q[[0, 0]].abs(), "{q:?}");
}
