//! `cutpaste::metrics` against scikit-learn (`roc_auc_score`, `roc_curve`,
//! `precision_recall_curve`), `scipy.ndimage.label` and a naive NumPy AUPRO: fixtures written by
//! `scripts/fixtures/make_density_fixtures.py` (committed in `tests/fixtures/`).
use cutpaste::metrics::{
    aupro, f1_max, label_components, per_type_auroc, pixel_auroc, roc_auc, roc_curve,
};
use ndarray::Array2;
use serde_json::Value;

fn fixtures() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/metrics_fixtures.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture file is committed");
    serde_json::from_str(&text).expect("fixture is valid JSON")
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn bools(v: &Value) -> Vec<bool> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_bool().unwrap())
        .collect()
}

fn grid<T>(v: &Value, f: impl Fn(&Value) -> T) -> Array2<T> {
    let rows = v.as_array().unwrap();
    let w = rows[0].as_array().unwrap().len();
    Array2::from_shape_fn((rows.len(), w), |(i, j)| f(&rows[i][j]))
}

#[test]
fn roc_auc_curve_and_f1_match_sklearn_including_ties() {
    let f = fixtures();
    let cases = f["roc"].as_array().unwrap();
    assert!(cases.len() >= 6);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let scores = f32s(&case["scores"]);
        let labels = bools(&case["labels"]);
        let auc = roc_auc(&scores, &labels).unwrap();
        let want = case["auc"].as_f64().unwrap();
        assert!((auc - want).abs() <= 1e-12, "{name}: auc {auc} vs {want}");

        let curve = roc_curve(&scores, &labels).unwrap();
        let (fpr, tpr) = (f64s(&case["fpr"]), f64s(&case["tpr"]));
        assert_eq!(curve.fpr.len(), fpr.len(), "{name}: number of ROC points");
        for i in 0..fpr.len() {
            assert!((curve.fpr[i] - fpr[i]).abs() <= 1e-12, "{name}: fpr[{i}]");
            assert!((curve.tpr[i] - tpr[i]).abs() <= 1e-12, "{name}: tpr[{i}]");
            match case["thresholds"][i].as_f64() {
                None => assert_eq!(curve.thresholds[i], f32::INFINITY, "{name}"),
                // serde_json parses decimals to within 1 ulp of f64: compare as f32
                Some(t) => assert_eq!(curve.thresholds[i], t as f32, "{name}: threshold {i}"),
            }
        }
        assert!((curve.auc() - want).abs() <= 1e-12, "{name}: trapezoid auc");

        let best = f1_max(&scores, &labels).unwrap();
        let w = &case["f1_max"];
        assert!(
            (best.f1 - w["f1"].as_f64().unwrap()).abs() <= 1e-12,
            "{name}: f1 {best:?}"
        );
        assert_eq!(
            best.threshold,
            w["threshold"].as_f64().unwrap() as f32,
            "{name}"
        );
        assert!(
            (best.precision - w["precision"].as_f64().unwrap()).abs() <= 1e-12,
            "{name}"
        );
        assert!(
            (best.recall - w["recall"].as_f64().unwrap()).abs() <= 1e-12,
            "{name}"
        );

        if let Some(per) = case.get("per_type_auroc") {
            let types: Vec<String> = case["types"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect();
            let got = per_type_auroc(&scores, &labels, &types).unwrap();
            let per = per.as_object().unwrap();
            assert_eq!(got.len(), per.len());
            for (t, auc) in got {
                let want = per[&t].as_f64().unwrap();
                assert!((auc - want).abs() <= 1e-12, "{name}/{t}: {auc} vs {want}");
            }
        }
    }
}

#[test]
fn components_match_scipy_8_connectivity() {
    let f = fixtures();
    let p = &f["pixel"];
    for (i, m) in p["masks"].as_array().unwrap().iter().enumerate() {
        let mask = grid(m, |v| v.as_i64().unwrap() != 0);
        let c = label_components(mask.view());
        assert_eq!(
            c.count() as u64,
            p["components"][i].as_u64().unwrap(),
            "mask {i}"
        );
        let mut sizes = c.sizes.clone();
        sizes.sort_unstable();
        let want: Vec<usize> = p["component_sizes"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(sizes, want, "mask {i}");
        // labels cover exactly the mask
        for ((y, x), &l) in c.labels.indexed_iter() {
            assert_eq!(l != 0, mask[[y, x]]);
        }
    }
}

#[test]
fn pixel_auroc_and_aupro_match_the_references() {
    let f = fixtures();
    let p = &f["pixel"];
    let masks: Vec<Array2<bool>> = p["masks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| grid(m, |v| v.as_i64().unwrap() != 0))
        .collect();
    let mask_views: Vec<_> = masks.iter().map(|m| m.view()).collect();
    for case in p["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let maps: Vec<Array2<f32>> = case["maps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| grid(m, |v| v.as_f64().unwrap() as f32))
            .collect();
        let views: Vec<_> = maps.iter().map(|m| m.view()).collect();
        let auc = pixel_auroc(&views, &mask_views).unwrap();
        let want = case["pixel_auroc"].as_f64().unwrap();
        assert!(
            (auc - want).abs() <= 1e-12,
            "{name}: pixel auroc {auc} vs {want}"
        );
        for (max_fpr, want) in case["aupro"].as_object().unwrap() {
            let max_fpr: f64 = max_fpr.parse().unwrap();
            let want = want.as_f64().unwrap();
            let got = aupro(&views, &mask_views, max_fpr).unwrap();
            assert!(
                (got - want).abs() <= 1e-9 * want,
                "{name}: aupro@{max_fpr} {got} vs {want}"
            );
        }
    }
}
