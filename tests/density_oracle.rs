//! `cutpaste::density` against scikit-learn: fixtures written by
//! `scripts/fixtures/make_density_fixtures.py` (committed in `tests/fixtures/`).
use cutpaste::density::{Covariance, Density, GaussianParams, KdeParams};
use ndarray::Array2;
use serde_json::Value;

fn fixtures() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/density_fixtures.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture file is committed");
    serde_json::from_str(&text).expect("fixture is valid JSON")
}

fn matrix_f32(v: &Value) -> Array2<f32> {
    let rows = v.as_array().unwrap();
    let d = rows[0].as_array().unwrap().len();
    Array2::from_shape_fn((rows.len(), d), |(i, j)| {
        rows[i][j].as_f64().unwrap() as f32
    })
}

fn vec_f64(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// |a − b| ≤ rtol · max(|b|, floor) for every element.
fn assert_close(what: &str, got: &[f64], want: &[f64], rtol: f64, floor: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = rtol * w.abs().max(floor);
        assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, sklearn {w}");
    }
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn check_gaussian(case: &Value, params: GaussianParams, check_shrinkage: bool) {
    let name = case["name"].as_str().unwrap();
    let train = matrix_f32(&case["train"]);
    let test = matrix_f32(&case["test"]);
    let fitted = params.fit(train.view()).unwrap();
    let mean = vec_f64(&case["location"]);
    assert_close(
        &format!("{name} mean"),
        fitted.mean().as_slice().unwrap(),
        &mean,
        1e-9,
        max_abs(&mean),
    );
    let cov: Vec<f64> = case["covariance"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(vec_f64)
        .collect();
    let got_cov: Vec<f64> = fitted.covariance().iter().copied().collect();
    // entries relative to the largest entry: near-zero off-diagonals have no relative precision
    assert_close(
        &format!("{name} covariance"),
        &got_cov,
        &cov,
        1e-9,
        max_abs(&cov),
    );
    if check_shrinkage {
        let s = case["shrinkage"].as_f64().unwrap();
        let got = fitted.shrinkage().unwrap();
        assert!((got - s).abs() <= 1e-9 * s, "{name} shrinkage {got} vs {s}");
    } else {
        assert_eq!(fitted.shrinkage(), None);
    }
    let maha = vec_f64(&case["mahalanobis"]);
    let got = fitted.score_f64(test.view()).unwrap();
    assert_close(
        &format!("{name} mahalanobis"),
        got.as_slice().unwrap(),
        &maha,
        1e-6,
        0.0,
    );
    let got32 = Density::Gaussian(params)
        .fit(train.view())
        .unwrap()
        .score(test.view())
        .unwrap();
    let got32: Vec<f64> = got32.iter().map(|&v| f64::from(v)).collect();
    assert_close(&format!("{name} f32 scores"), &got32, &maha, 1e-4, 0.0);
}

#[test]
fn ledoit_wolf_matches_sklearn() {
    let f = fixtures();
    let cases = f["ledoit_wolf"].as_array().unwrap();
    assert!(cases.len() >= 4);
    for case in cases {
        let l2 = case["l2_normalize"].as_bool().unwrap();
        check_gaussian(case, GaussianParams::default().l2_normalize(l2), true);
    }
}

#[test]
fn empirical_reg_covar_matches_sklearn_gaussian_mixture() {
    let f = fixtures();
    let cases = f["empirical"].as_array().unwrap();
    assert!(cases.len() >= 3);
    for case in cases {
        let reg_covar = case["reg_covar"].as_f64().unwrap();
        let params = GaussianParams::default().covariance(Covariance::Empirical { reg_covar });
        check_gaussian(case, params, false);
    }
}

#[test]
fn kde_matches_the_droc_formula_and_sklearn() {
    let f = fixtures();
    let cases = f["kde"].as_array().unwrap();
    assert!(cases.len() >= 4);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let train = matrix_f32(&case["train"]);
        let test = matrix_f32(&case["test"]);
        let gamma = case["gamma"].as_f64().unwrap();
        let params = if case["droc"].as_bool().unwrap() {
            KdeParams::default()
        } else {
            KdeParams::default().gamma(gamma)
        };
        let fitted = params.fit(train.view()).unwrap();
        assert!(
            (fitted.gamma() - gamma).abs() <= 1e-9 * gamma,
            "{name} gamma {} vs {gamma}",
            fitted.gamma()
        );
        let want = vec_f64(&case["score"]);
        let got: Vec<f64> = fitted
            .score(test.view())
            .unwrap()
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        assert_close(&format!("{name} kde score"), &got, &want, 1e-4, 1e-2);
    }
}
