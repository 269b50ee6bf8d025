//! `cutpaste::density`: typed errors on bad input, n < d, batching, serialisation, invariances.
use cutpaste::density::{
    ArrayData, Covariance, Density, DensityEstimator, DensityRecord, FittedDensity,
    FittedEstimator, GaussianParams, KdeParams,
};
use cutpaste::Error;
use ndarray::{s, Array2, Axis};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(n: usize, d: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // ReLU-like non-negative features with a shared offset (as pooled CNN features)
    Array2::from_shape_fn((n, d), |_| (rng.random::<f32>() - 0.3).max(0.0) + 0.05)
}

fn empirical(reg_covar: f64) -> Density {
    Density::Gaussian(GaussianParams::default().covariance(Covariance::Empirical { reg_covar }))
}

#[test]
fn fewer_samples_than_dimensions_fits_with_ledoit_wolf() {
    let train = random(10, 512, 1);
    let fitted = Density::gaussian().fit(train.view()).unwrap();
    let FittedDensity::Gaussian(g) = &fitted else {
        panic!("gaussian expected")
    };
    let s = g.shrinkage().unwrap();
    assert!(s > 0.0 && s <= 1.0, "shrinkage {s}");
    let normal = fitted.score(train.view()).unwrap();
    let far = fitted
        .score(random(5, 512, 2).map(|v| v * v * 3.0).view())
        .unwrap();
    assert!(normal
        .iter()
        .chain(far.iter())
        .all(|v| v.is_finite() && *v >= 0.0));
    // the training samples themselves are less anomalous than differently distributed samples
    let max_normal = normal.iter().cloned().fold(f32::MIN, f32::max);
    let min_far = far.iter().cloned().fold(f32::MAX, f32::min);
    assert!(max_normal < min_far, "{max_normal} vs {min_far}");
}

#[test]
fn singular_covariance_without_regularisation_is_a_typed_error() {
    // n < d, reg_covar = 0: rank-deficient covariance
    let err = empirical(0.0).fit(random(10, 64, 3).view()).unwrap_err();
    assert!(matches!(err, Error::SingularCovariance { .. }), "{err:?}");
    assert!(err.to_string().contains("reg_covar"), "{err}");
    // n > d but one constant feature (raw features, no L2 normalisation)
    let mut x = random(50, 4, 4);
    x.column_mut(2).fill(0.5);
    let raw = GaussianParams::default()
        .covariance(Covariance::Empirical { reg_covar: 0.0 })
        .l2_normalize(false);
    let err = raw.fit(x.view()).unwrap_err();
    assert!(matches!(err, Error::SingularCovariance { .. }), "{err:?}");
    // the default regulariser makes both work
    assert!(empirical(1e-6).fit(random(10, 64, 3).view()).is_ok());
    assert!(raw
        .covariance(Covariance::empirical())
        .fit(x.view())
        .is_ok());
}

/// One training sample (or identical ones, or two) leaves Ledoit–Wolf with shrinkage 0 and a
/// singular covariance: the error's advice must be advice that works.
#[test]
fn singular_covariance_advice_works() {
    let one = random(1, 512, 5);
    let err = Density::gaussian().fit(one.view()).unwrap_err();
    assert!(matches!(err, Error::SingularCovariance { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("1 samples"), "{msg}");
    for advice in [
        "more normal images",
        "at least 3",
        "--density kde",
        "reg_covar: 1e-3",
    ] {
        assert!(msg.contains(advice), "'{advice}' not in: {msg}");
    }
    // ... and the old advice ("use Ledoit-Wolf") is gone: it is the default that failed
    assert!(!msg.contains("use Ledoit-Wolf"), "{msg}");
    // the KDE and the regularised empirical covariance fit one sample
    assert!(Density::kde().fit(one.view()).is_ok());
    let reg = empirical(1e-3).fit(one.view()).unwrap();
    assert!(reg
        .score(random(2, 512, 6).view())
        .unwrap()
        .iter()
        .all(|s| s.is_finite()));
    // two samples still fail with Ledoit–Wolf, three distinct ones fit
    assert!(Density::gaussian().fit(random(2, 512, 7).view()).is_err());
    assert!(Density::gaussian().fit(random(3, 512, 7).view()).is_ok());
    // identical samples fail however many there are
    let same = ndarray::Array2::from_shape_fn((10, 512), |(_, j)| one[[0, j]]);
    assert!(Density::gaussian().fit(same.view()).is_err());
    // and the count is checked before features exist (so before training)
    for n in 0..3 {
        assert!(matches!(
            Density::gaussian().check_samples(n),
            Err(Error::SingularCovariance { .. })
        ));
    }
    assert!(Density::gaussian().check_samples(3).is_ok());
    assert!(Density::kde().check_samples(1).is_ok());
    assert!(empirical(1e-3).check_samples(1).is_ok());
}

#[test]
fn bad_values_are_typed_errors_naming_the_row() {
    let mut x = random(20, 8, 5);
    x[[7, 3]] = f32::NAN;
    for density in [Density::gaussian(), empirical(1e-6), Density::kde()] {
        match density.fit(x.view()).unwrap_err() {
            Error::NonFinite { row, .. } => assert_eq!(row, 7),
            e => panic!("{e:?}"),
        }
        let fitted = density.fit(random(20, 8, 6).view()).unwrap();
        let mut q = random(4, 8, 7);
        q[[2, 0]] = f32::INFINITY;
        match fitted.score(q.view()).unwrap_err() {
            Error::NonFinite { row, .. } => assert_eq!(row, 2),
            e => panic!("{e:?}"),
        }
        // dimension mismatch at score time
        match fitted.score(random(3, 9, 8).view()).unwrap_err() {
            Error::DimensionMismatch { expected, got, .. } => assert_eq!((expected, got), (8, 9)),
            e => panic!("{e:?}"),
        }
        // zero samples to fit; zero columns; zero rows to score is fine
        let e = density
            .fit(Array2::<f32>::zeros((0, 8)).view())
            .unwrap_err();
        assert!(matches!(e, Error::EmptyDataset { .. }), "{e:?}");
        let e = density
            .fit(Array2::<f32>::zeros((5, 0)).view())
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{e:?}");
        assert_eq!(
            fitted
                .score(Array2::<f32>::zeros((0, 8)).view())
                .unwrap()
                .len(),
            0
        );
    }
}

#[test]
fn invalid_parameters_are_rejected() {
    for reg in [-1e-6, f64::NAN, f64::INFINITY] {
        let e = empirical(reg).fit(random(5, 3, 9).view()).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidParam { name, .. } if name == "reg_covar"),
            "{e:?}"
        );
    }
    for g in [0.0, -1.0, f64::NAN] {
        let e = Density::Kde(KdeParams::default().gamma(g))
            .check()
            .unwrap_err();
        assert!(
            matches!(&e, Error::InvalidParam { name, .. } if name == "gamma"),
            "{e:?}"
        );
    }
    // DROC rule with zero variance: one sample of one dimension
    let e = Density::kde()
        .fit(Array2::<f32>::ones((1, 1)).view())
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput { .. }), "{e:?}");
    // explicit bandwidth h ↔ gamma = 1/(2h²)
    assert_eq!(
        KdeParams::default().bandwidth(0.5),
        KdeParams::default().gamma(2.0)
    );
}

#[test]
fn batched_scoring_equals_row_by_row() {
    // Gaussian blocks of 2048 rows; KDE blocks of 1Mi / n_train = 349 rows for 3000 train rows
    let train = random(3000, 6, 10);
    let query = random(4500, 6, 11);
    for density in [Density::gaussian(), Density::kde()] {
        let fitted = density.fit(train.view()).unwrap();
        let all = fitted.score(query.view()).unwrap();
        for i in [0, 348, 349, 350, 2047, 2048, 2049, 4499] {
            let one = fitted.score(query.slice(s![i..i + 1, ..])).unwrap();
            assert!(
                (one[0] - all[i]).abs() <= 1e-6 * all[i].abs().max(1.0),
                "row {i}"
            );
        }
    }
}

#[test]
fn kde_matches_a_naive_rbf_sum() {
    // score = -(log Σ exp(-γ‖f − x‖²) + 2γ)/γ on unit vectors, computed naively in f64
    let train = random(40, 5, 12);
    let query = random(7, 5, 13);
    let gamma = 3.0;
    let fitted = KdeParams::default().gamma(gamma).fit(train.view()).unwrap();
    let unit = |r: ndarray::ArrayView1<f32>| {
        let r = r.mapv(f64::from);
        let n = r.dot(&r).sqrt();
        r / n
    };
    let got = fitted.score(query.view()).unwrap();
    for (i, q) in query.axis_iter(Axis(0)).enumerate() {
        let q = unit(q);
        let sum: f64 = train
            .axis_iter(Axis(0))
            .map(|x| {
                let d = &q - &unit(x);
                (-gamma * d.dot(&d)).exp()
            })
            .sum();
        let want = -(sum.ln() + 2.0 * gamma) / gamma;
        assert!(
            (f64::from(got[i]) - want).abs() < 1e-5,
            "{i}: {} vs {want}",
            got[i]
        );
    }
}

#[test]
fn arrays_round_trip_through_json_bit_identically() {
    let train = random(30, 6, 14);
    let query = random(9, 6, 15);
    for density in [Density::gaussian(), empirical(1e-3), Density::kde()] {
        let fitted = density.fit(train.view()).unwrap();
        let json = serde_json::to_string(&fitted.record().unwrap()).unwrap();
        let record: DensityRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(record.params(), density);
        let arrays = fitted.to_arrays().unwrap();
        let back = FittedDensity::from_arrays(&record, &arrays).unwrap();
        assert_eq!(
            back.score(query.view()).unwrap(),
            fitted.score(query.view()).unwrap()
        );
        assert_eq!(back.record().unwrap(), fitted.record().unwrap());
        // a missing or mis-shaped array is a typed error
        let e = FittedDensity::from_arrays(&record, &arrays[1..]).unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{e:?}");
        let mut bad = arrays.clone();
        bad[0].shape[0] += 1;
        let e = FittedDensity::from_arrays(&record, &bad).unwrap_err();
        assert!(matches!(e, Error::DimensionMismatch { .. }), "{e:?}");
        let mut bad = arrays.clone();
        bad[0].data = match &bad[0].data {
            ArrayData::F32(v) => ArrayData::F64(v.iter().map(|&x| f64::from(x)).collect()),
            ArrayData::F64(v) => ArrayData::F32(v.iter().map(|&x| x as f32).collect()),
        };
        let e = FittedDensity::from_arrays(&record, &bad).unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{e:?}");
    }
}

#[test]
fn trait_objects_agree_with_the_enum() {
    fn through_trait<E: DensityEstimator>(e: &E, x: &Array2<f32>) -> Vec<f32> {
        let f = e.fit(x.view()).unwrap();
        assert_eq!((f.dim(), f.n_train()), (x.ncols(), x.nrows()));
        f.score(x.view()).unwrap().to_vec()
    }
    let x = random(25, 4, 16);
    let g = GaussianParams::default();
    assert_eq!(
        through_trait(&g, &x),
        through_trait(&Density::Gaussian(g.clone()), &x)
    );
    let k = KdeParams::default();
    assert_eq!(
        through_trait(&k, &x),
        through_trait(&Density::Kde(k.clone()), &x)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Permuting feature columns (of train and test alike) leaves Mahalanobis distances and KDE
    /// scores unchanged; scaling a row leaves them unchanged when rows are L2-normalised.
    #[test]
    fn scores_are_invariant_to_column_order_and_row_scale(seed in 0u64..1000, scale in 0.1f32..10.0) {
        let train = random(40, 5, seed);
        let query = random(6, 5, seed + 1);
        let perm = [3usize, 0, 4, 1, 2];
        let permute = |m: &Array2<f32>| m.select(Axis(1), &perm);
        for density in [Density::gaussian(), empirical(1e-6), Density::kde()] {
            let a = density.fit(train.view()).unwrap().score(query.view()).unwrap();
            let fitted = density.fit(permute(&train).view()).unwrap();
            let b = fitted.score(permute(&query).view()).unwrap();
            let c = fitted.score(permute(&query).mapv(|v| v * scale).view()).unwrap();
            for i in 0..a.len() {
                let tol = 1e-4 * a[i].abs().max(1.0);
                prop_assert!((a[i] - b[i]).abs() <= tol, "perm {} vs {}", a[i], b[i]);
                prop_assert!((a[i] - c[i]).abs() <= tol, "scale {} vs {}", a[i], c[i]);
            }
        }
    }
}
