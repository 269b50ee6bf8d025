//! The embedding map of a tiny real detector (32 px, 3 steps, CPU): groups, sizes, determinism,
//! and agreement with a map built by hand from `Detector::embed` and the 3-way views.
use cutpaste::augment::{batch_views, Augmentation, ViewKind};
use cutpaste::data::synthetic::{SyntheticKind, SyntheticSpec};
use cutpaste::embedding::{embedding_map, EmbeddingGroup, EmbeddingMap};
use cutpaste::model::Precision;
use cutpaste::prelude::*;

fn tiny_detector(dir: &std::path::Path) -> (Detector, Dataset) {
    let root = SyntheticSpec::new(SyntheticKind::Part)
        .side(32)
        .counts(6, 3, 3)
        .seed(1)
        .write(dir)
        .unwrap();
    let ds = Dataset::mvtec(root).unwrap();
    let det = Detector::params()
        .image_size(32)
        .batch_images(2)
        .training(TrainParams::paper().steps(3))
        .device(Device::Cpu)
        .fast_path(FastPath {
            precision: Precision::Fp32,
            channels_last: false,
        })
        .seed(3)
        .fit(&ds)
        .unwrap();
    (det, ds)
}

#[test]
fn embedding_map_of_a_tiny_detector() {
    let dir = tempfile::tempdir().unwrap();
    let (det, ds) = tiny_detector(dir.path());
    let map = embedding_map(&det, &ds, 11, 4).unwrap();
    // 4 of 6 training images, their 4 CutPaste and 4 Scar views, all 3 good and 3 defect tests
    let counts: Vec<usize> = EmbeddingGroup::ALL.iter().map(|g| map.count(*g)).collect();
    assert_eq!(counts, vec![4, 4, 4, 3, 3]);
    assert!(map
        .points
        .iter()
        .all(|p| p.x.is_finite() && p.y.is_finite()));
    assert!((map.perplexity - 17.0 / 3.0).abs() < 1e-12);
    assert_eq!(
        map,
        EmbeddingMap {
            seconds: map.seconds,
            ..embedding_map(&det, &ds, 11, 4).unwrap()
        }
    );
    let other = embedding_map(&det, &ds, 12, 4).unwrap();
    assert_ne!(
        map.points.iter().map(|p| (p.x, p.y)).collect::<Vec<_>>(),
        other.points.iter().map(|p| (p.x, p.y)).collect::<Vec<_>>()
    );

    // the same map by hand: training images 0, 1, 3, 4 (evenly spaced), their views, the tests
    let train = cutpaste::data::load_all(&[0, 1, 3, 4].map(|i| ds.train[i].clone()), 32).unwrap();
    let views = batch_views(&Augmentation::three_way().pre_augment(None), &train, 11).unwrap();
    let kind = |k: ViewKind| -> Vec<image::RgbImage> {
        views
            .iter()
            .filter(|v| v.kind == k)
            .map(|v| v.image.clone())
            .collect()
    };
    let test = ds.load_test(32).unwrap();
    let (good, bad): (Vec<_>, Vec<_>) = test
        .into_iter()
        .zip(&ds.test)
        .partition(|(_, s)| !s.is_anomalous());
    let imgs = |v: Vec<(image::RgbImage, &cutpaste::data::Sample)>| -> Vec<image::RgbImage> {
        v.into_iter().map(|(i, _)| i).collect()
    };
    let feats = [
        det.embed(&train).unwrap(),
        det.embed(&kind(ViewKind::CutPaste)).unwrap(),
        det.embed(&kind(ViewKind::Scar)).unwrap(),
        det.embed(&imgs(good)).unwrap(),
        det.embed(&imgs(bad)).unwrap(),
    ];
    let groups: Vec<_> = EmbeddingGroup::ALL
        .iter()
        .zip(&feats)
        .map(|(g, f)| (*g, f.view()))
        .collect();
    let by_hand = EmbeddingMap::from_features(&groups, 11).unwrap();
    for (a, b) in map.points.iter().zip(&by_hand.points) {
        assert_eq!(a.group, b.group);
        assert!(
            (a.x - b.x).abs() < 1e-6 && (a.y - b.y).abs() < 1e-6,
            "{a:?} vs {b:?}"
        );
    }

    assert!(matches!(
        embedding_map(&det, &ds, 11, 0),
        Err(Error::InvalidParam { .. })
    ));
}
