//! `cutpaste::metrics`: typed errors, and properties against naive brute-force definitions.
use cutpaste::metrics::{
    aupro, f1_max, label_components, per_type_auroc, pixel_auroc, roc_auc, roc_curve,
};
use cutpaste::Error;
use ndarray::Array2;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Mann–Whitney by definition: pairs (anomalous, normal) ordered correctly, ties ½.
fn naive_auc(s: &[f32], l: &[bool]) -> f64 {
    let (mut num, mut pairs) = (0.0, 0.0);
    for (&a, _) in s.iter().zip(l).filter(|(_, &b)| b) {
        for (&n, _) in s.iter().zip(l).filter(|(_, &b)| !b) {
            pairs += 1.0;
            num += if a > n {
                1.0
            } else if a == n {
                0.5
            } else {
                0.0
            };
        }
    }
    num / pairs
}

/// AUPRO by definition (same as the Python reference, independent of the library's walk).
fn naive_aupro(maps: &[Array2<f32>], masks: &[Array2<bool>], max_fpr: f64) -> f64 {
    let mut normal = Vec::new();
    let mut regions: Vec<Vec<f32>> = Vec::new();
    for (s, m) in maps.iter().zip(masks) {
        let c = label_components(m.view());
        let mut r = vec![Vec::new(); c.count()];
        for ((y, x), &l) in c.labels.indexed_iter() {
            if l == 0 {
                normal.push(s[[y, x]]);
            } else {
                r[l as usize - 1].push(s[[y, x]]);
            }
        }
        regions.extend(r);
    }
    let mut ts: Vec<f32> = maps.iter().flat_map(|m| m.iter().copied()).collect();
    ts.sort_by(|a, b| b.partial_cmp(a).unwrap());
    ts.dedup();
    let share = |v: &[f32], t: f32| v.iter().filter(|&&x| x >= t).count() as f64 / v.len() as f64;
    let (mut px, mut py, mut area) = (0.0, 0.0, 0.0);
    for t in ts {
        let x = share(&normal, t);
        let y = regions.iter().map(|r| share(r, t)).sum::<f64>() / regions.len() as f64;
        if x >= max_fpr {
            let y_end = if x > max_fpr {
                py + (y - py) * (max_fpr - px) / (x - px)
            } else {
                y
            };
            return (area + 0.5 * (py + y_end) * (max_fpr - px)) / max_fpr;
        }
        area += 0.5 * (py + y) * (x - px);
        (px, py) = (x, y);
    }
    area / max_fpr
}

fn random_maps(
    seed: u64,
    n: usize,
    h: usize,
    w: usize,
    levels: u32,
) -> (Vec<Array2<f32>>, Vec<Array2<bool>>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut maps, mut masks) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let mut mask = Array2::from_elem((h, w), false);
        for _ in 0..rng.random_range(0..3) {
            let (cy, cx) = (rng.random_range(0..h), rng.random_range(0..w));
            let (ry, rx) = (rng.random_range(0..4usize), rng.random_range(0..4usize));
            for y in cy.saturating_sub(ry)..(cy + ry + 1).min(h) {
                for x in cx.saturating_sub(rx)..(cx + rx + 1).min(w) {
                    mask[[y, x]] = rng.random::<f32>() < 0.8;
                }
            }
        }
        let map = Array2::from_shape_fn((h, w), |(y, x)| {
            let v = rng.random::<f32>() + if mask[[y, x]] { 0.4 } else { 0.0 };
            (v * levels as f32).round() / levels as f32 // few levels: many ties
        });
        maps.push(map);
        masks.push(mask);
    }
    // make sure both classes are present
    masks[0][[0, 0]] = true;
    masks[0][[h - 1, w - 1]] = false;
    (maps, masks)
}

#[test]
fn errors_are_typed() {
    let e = roc_auc(&[0.1, 0.2], &[true, true]).unwrap_err();
    assert!(
        matches!(&e, Error::SingleClass { present, .. } if present == "anomalous"),
        "{e:?}"
    );
    let e = roc_curve(&[0.1, 0.2], &[false, false]).unwrap_err();
    assert!(
        matches!(&e, Error::SingleClass { present, .. } if present == "normal"),
        "{e:?}"
    );
    let e = f1_max(&[0.1], &[false]).unwrap_err();
    assert!(matches!(e, Error::SingleClass { .. }), "{e:?}");
    let e = roc_auc(&[0.1, f32::NAN, 0.3], &[true, false, true]).unwrap_err();
    assert!(matches!(e, Error::NonFinite { row: 1, .. }), "{e:?}");
    let e = roc_auc(&[0.1, 0.2], &[true]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::DimensionMismatch {
                expected: 2,
                got: 1,
                ..
            }
        ),
        "{e:?}"
    );
    let e = roc_auc(&[], &[]).unwrap_err();
    assert!(matches!(e, Error::EmptyDataset { .. }), "{e:?}");
    let e = per_type_auroc(&[0.1, 0.2], &[false, true], &["good"]).unwrap_err();
    assert!(matches!(e, Error::DimensionMismatch { .. }), "{e:?}");

    let map = Array2::<f32>::zeros((4, 5));
    let empty = Array2::from_elem((4, 5), false);
    let full = Array2::from_elem((4, 5), true);
    let e = pixel_auroc(&[map.view()], &[empty.view()]).unwrap_err();
    assert!(matches!(e, Error::SingleClass { .. }), "{e:?}");
    let e = aupro(&[map.view()], &[empty.view()], 0.3).unwrap_err();
    assert!(matches!(e, Error::SingleClass { .. }), "{e:?}");
    let e = aupro(&[map.view()], &[full.view()], 0.3).unwrap_err();
    assert!(matches!(e, Error::SingleClass { .. }), "{e:?}");
    let wrong = Array2::from_elem((4, 6), false);
    let e = pixel_auroc(&[map.view()], &[wrong.view()]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::DimensionMismatch {
                expected: 5,
                got: 6,
                ..
            }
        ),
        "{e:?}"
    );
    let e = aupro(&[map.view(), map.view()], &[empty.view()], 0.3).unwrap_err();
    assert!(matches!(e, Error::DimensionMismatch { .. }), "{e:?}");
    let e = pixel_auroc(&[], &[]).unwrap_err();
    assert!(matches!(e, Error::EmptyDataset { .. }), "{e:?}");
    let mut bad = map.clone();
    bad[[2, 1]] = f32::INFINITY;
    let e = aupro(&[map.view(), bad.view()], &[full.view(), empty.view()], 0.3).unwrap_err();
    assert!(matches!(e, Error::NonFinite { row: 2, .. }), "{e:?}");
    for max_fpr in [0.0, -0.1, 1.5, f64::NAN] {
        let e = aupro(&[map.view()], &[full.view()], max_fpr).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidParam { name, .. } if name == "max_fpr"),
            "{e:?}"
        );
    }
}

#[test]
fn signed_zeros_tie() {
    // −0.0 and +0.0 are the same score: one tie → ½
    assert_eq!(roc_auc(&[-0.0, 0.0], &[true, false]).unwrap(), 0.5);
    assert_eq!(roc_auc(&[0.0, -0.0], &[true, false]).unwrap(), 0.5);
}

#[test]
fn aupro_with_histogram_cutoff_matches_the_definition_on_larger_maps() {
    // 6 maps of 48×40 = 11,520 pixels: the cutoff bucket holds several distinct thresholds
    for (seed, levels) in [(1u64, 300u32), (2, 40), (3, 5000)] {
        let (maps, masks) = random_maps(seed, 6, 48, 40, levels);
        let mv: Vec<_> = maps.iter().map(|m| m.view()).collect();
        let kv: Vec<_> = masks.iter().map(|m| m.view()).collect();
        for max_fpr in [0.3, 0.01, 0.77, 1.0] {
            let got = aupro(&mv, &kv, max_fpr).unwrap();
            let want = naive_aupro(&maps, &masks, max_fpr);
            assert!(
                (got - want).abs() <= 1e-9 * want,
                "seed {seed} @{max_fpr}: {got} vs {want}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn roc_auc_is_the_mann_whitney_statistic(
        data in prop::collection::vec((0u8..12, any::<bool>()), 2..120),
    ) {
        let s: Vec<f32> = data.iter().map(|(v, _)| *v as f32 * 0.25 - 1.0).collect();
        let l: Vec<bool> = data.iter().map(|(_, b)| *b).collect();
        prop_assume!(l.iter().any(|&b| b) && l.iter().any(|&b| !b));
        let auc = roc_auc(&s, &l).unwrap();
        prop_assert!((auc - naive_auc(&s, &l)).abs() < 1e-12);
        let neg: Vec<f32> = s.iter().map(|v| -v).collect();
        prop_assert!((roc_auc(&neg, &l).unwrap() - (1.0 - auc)).abs() < 1e-12);
        prop_assert!((roc_curve(&s, &l).unwrap().auc() - auc).abs() < 1e-12);
        // one defect type: per-type AUROC is the AUROC
        let types = vec!["crack"; s.len()];
        prop_assert_eq!(per_type_auroc(&s, &l, &types).unwrap(), vec![("crack".to_string(), auc)]);
    }

    #[test]
    fn f1_max_is_the_best_threshold(
        data in prop::collection::vec((0u8..20, any::<bool>()), 2..100),
    ) {
        let s: Vec<f32> = data.iter().map(|(v, _)| *v as f32).collect();
        let l: Vec<bool> = data.iter().map(|(_, b)| *b).collect();
        prop_assume!(l.iter().any(|&b| b) && l.iter().any(|&b| !b));
        let f1_at = |t: f32| {
            let tp = s.iter().zip(&l).filter(|(v, b)| **v >= t && **b).count() as f64;
            let fp = s.iter().zip(&l).filter(|(v, b)| **v >= t && !**b).count() as f64;
            let p = l.iter().filter(|b| **b).count() as f64;
            2.0 * tp / (tp + fp + p)
        };
        let best = s.iter().map(|&t| f1_at(t)).fold(0.0, f64::max);
        let got = f1_max(&s, &l).unwrap();
        prop_assert!((got.f1 - best).abs() < 1e-12);
        prop_assert!((f1_at(got.threshold) - best).abs() < 1e-12);
        // the lowest threshold among the maximisers
        let lowest = s.iter().copied().filter(|&t| (f1_at(t) - best).abs() < 1e-12)
            .fold(f32::INFINITY, f32::min);
        prop_assert_eq!(got.threshold, lowest);
    }

    #[test]
    fn pixel_metrics_match_flattened_and_naive_definitions(seed in 0u64..10_000, levels in 2u32..60) {
        let (maps, masks) = random_maps(seed, 3, 9, 11, levels);
        let mv: Vec<_> = maps.iter().map(|m| m.view()).collect();
        let kv: Vec<_> = masks.iter().map(|m| m.view()).collect();
        let s: Vec<f32> = maps.iter().flat_map(|m| m.iter().copied()).collect();
        let l: Vec<bool> = masks.iter().flat_map(|m| m.iter().copied()).collect();
        prop_assert!((pixel_auroc(&mv, &kv).unwrap() - naive_auc(&s, &l)).abs() < 1e-12);
        let got = aupro(&mv, &kv, 0.3).unwrap();
        let want = naive_aupro(&maps, &masks, 0.3);
        prop_assert!((got - want).abs() <= 1e-9 * want.max(1e-9), "{} vs {}", got, want);
        // strictly increasing transforms leave AUPRO unchanged
        let moved: Vec<Array2<f32>> = maps.iter().map(|m| m.mapv(|v| 3.0 * v - 7.0)).collect();
        let mv2: Vec<_> = moved.iter().map(|m| m.view()).collect();
        prop_assert!((aupro(&mv2, &kv, 0.3).unwrap() - got).abs() < 1e-12);
    }
}
