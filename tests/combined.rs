//! `ImageScore::Combined`: the map and pooled scores, each standardised by normal images'
//! statistics, summed with the pooled one weighted by images per dimension. Checked against the two parts the detector reports and statistics
//! computed here by hand; the statistics survive a checkpoint and a damaged one is refused.
use cutpaste::data::synthetic::{SyntheticKind, SyntheticSpec};
use cutpaste::detector::{ScaleSource, ScoreScale, Standardiser};
use cutpaste::localize::LocalizerParams;
use cutpaste::model::{FastPath, Precision, TrainParams};
use cutpaste::prelude::*;
use image::RgbImage;
use serde_json::Value;

mod common;

fn spec() -> SyntheticSpec {
    SyntheticSpec::new(SyntheticKind::Part)
        .side(64)
        .counts(14, 3, 3)
        .seed(5)
}

fn params(score: ImageScore) -> DetectorParams {
    let loc = LocalizerParams::dense()
        .steps(2)
        .batch_images(2)
        .pca_dim(8)
        .pca_images(6);
    Detector::params()
        .image_size(32)
        .batch_images(2)
        .training(TrainParams::paper().steps(2))
        .device(Device::Cpu)
        .fast_path(FastPath {
            precision: Precision::Fp32,
            channels_last: false,
        })
        .seed(1)
        .localizer(loc)
        .image_score(score)
}

fn fitted(score: ImageScore) -> (Detector, Vec<RgbImage>) {
    let s = spec();
    let train: Vec<RgbImage> = (0..s.n_train).map(|i| s.train_image(i)).collect();
    let det = params(score)
        .fit_images_with(train, |_| Control::Continue)
        .unwrap();
    let test: Vec<RgbImage> = (0..3)
        .map(|i| s.test_good_image(i))
        .chain((0..3).map(|i| s.defect_sample(i).image))
        .collect();
    (det, test)
}

/// Mean and population standard deviation, in f64.
fn mean_sd(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = v.iter().map(|&x| (f64::from(x) - m).powi(2)).sum::<f64>() / n;
    (m, var.sqrt())
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-4 * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn combined_scores_are_the_standardised_parts_summed_and_survive_a_checkpoint() {
    let (mut det, test) = fitted(ImageScore::Combined);
    let scale: ScoreScale = *det.score_scale().expect("fit sets the scale");
    assert_eq!(scale.source, ScaleSource::Training);
    // all 14 training images give map statistics (≤ 64) and cross-validated pooled ones
    assert_eq!((scale.map.n, scale.pooled.n), (14, 14));
    assert!(scale.map.sd > 0.0 && scale.pooled.sd > 0.0);
    // 14 training images for a 512-d pooled Gaussian: the pooled z-score weighs 14/512
    assert_eq!(scale.pooled_weight, 14.0 / 512.0);

    let (map, pooled) = det.score_parts(&test).unwrap().expect("has a localizer");
    let scores = det.score_batch(&test).unwrap();
    for i in 0..test.len() {
        let by_hand = ((f64::from(map[i]) - scale.map.mean) / scale.map.sd
            + 14.0 / 512.0 * (f64::from(pooled[i]) - scale.pooled.mean) / scale.pooled.sd)
            as f32;
        assert!(close(scores[i], by_hand), "{i}: {} vs {by_hand}", scores[i]);
    }

    // held-out normals replace the statistics with their own (and clear the threshold)
    let s = spec();
    let held: Vec<RgbImage> = (0..4).map(|i| s.test_good_image(i % 3)).collect();
    det.set_threshold(1.0).unwrap();
    let new = det.fit_score_scale(&held).unwrap();
    assert_eq!(new.source, ScaleSource::HeldOut);
    assert!(
        det.threshold().is_none(),
        "a threshold set on the old scale is cleared"
    );
    let (hm, hp) = det.score_parts(&held).unwrap().unwrap();
    let ((mm, ms), (pm, ps)) = (mean_sd(&hm), mean_sd(&hp));
    assert!(
        (new.map.mean - mm).abs() <= 1e-9 * mm.abs().max(1.0),
        "{new:?}"
    );
    assert!((new.map.sd - ms).abs() <= 1e-9 * ms.max(1.0));
    assert!((new.pooled.mean - pm).abs() <= 1e-9 * pm.abs().max(1.0));
    assert!((new.pooled.sd - ps).abs() <= 1e-9 * ps.max(1.0));
    assert_eq!((new.map.n, new.pooled.n), (4, 4));
    assert_eq!(
        new.pooled_weight, scale.pooled_weight,
        "the weight is fit's"
    );
    // the held-out images' combined scores now have mean 0
    let z = det.score_batch(&held).unwrap();
    assert!(z.iter().sum::<f32>().abs() < 1e-3, "{z:?}");

    // the checkpoint keeps the statistics and the scores
    let bytes = det.to_bytes().unwrap();
    let back = Detector::from_bytes(&bytes, Device::Cpu).unwrap();
    assert_eq!(back.score_scale(), Some(&new));
    let again = back.score_batch(&test).unwrap();
    let now = det.score_batch(&test).unwrap();
    for (a, b) in again.iter().zip(&now) {
        assert!(close(*a, *b), "{a} vs {b}");
    }

    // a Combined checkpoint without its statistics is refused, naming what is missing
    let damaged = common::edit_checkpoint_params(&bytes, |p| p["score_scale"] = Value::Null);
    match Detector::from_bytes(&damaged, Device::Cpu) {
        Err(e @ Error::Checkpoint { .. }) => {
            assert!(e.to_string().contains("score_scale"), "{e}")
        }
        other => panic!("expected a checkpoint error, got {:?}", other.err()),
    }
    let zero_sd =
        common::edit_checkpoint_params(&bytes, |p| p["score_scale"]["map"]["sd"] = 0.0.into());
    let big_weight =
        common::edit_checkpoint_params(&bytes, |p| p["score_scale"]["pooled_weight"] = 2.0.into());
    for damaged in [zero_sd, big_weight] {
        assert!(matches!(
            Detector::from_bytes(&damaged, Device::Cpu),
            Err(Error::Checkpoint { .. })
        ));
    }
}

#[test]
fn only_combined_standardises_and_it_needs_a_localizer() {
    let (mut det, test) = fitted(ImageScore::Map);
    assert!(det.score_scale().is_none());
    let e = det.fit_score_scale(&test).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidParam { name, .. } if name == "image_score"),
        "{e}"
    );
    // the map score is the map part alone
    let (map, _) = det.score_parts(&test).unwrap().unwrap();
    assert_eq!(det.score_batch(&test).unwrap(), map);

    let mut no_loc = Detector::params().image_score(ImageScore::Combined);
    no_loc = no_loc.device(Device::Cpu);
    match no_loc.check() {
        Err(Error::InvalidParam { name, reason }) => {
            assert_eq!(name, "image_score");
            assert!(reason.contains("Combined"), "{reason}");
        }
        other => panic!("expected image_score to be refused, got {other:?}"),
    }
}

#[test]
fn standardising_on_one_image_is_refused_by_name() {
    let (mut det, test) = fitted(ImageScore::Combined);
    let e = det.fit_score_scale(&test[..1]).unwrap_err();
    assert!(e.to_string().contains("at least 2"), "{e}");
    assert_eq!(det.score_scale().unwrap().source, ScaleSource::Training);
    let _ = Standardiser::fit(&[1.0, 2.0], "x").unwrap();
}

#[test]
fn fitting_the_combined_score_on_one_image_is_refused_before_training() {
    // one image: no fold of the cross-validated pooled statistics has anything to fit (this was
    // an empty-dataset error naming the KDE's features, after training); with the map alone
    // one image is enough to get past this check
    let kde = Density::kde();
    let one = vec![spec().train_image(0)];
    let calls = std::cell::Cell::new(0);
    let e = params(ImageScore::Combined)
        .density(kde.clone())
        .fit_images_with(one.clone(), |_| {
            calls.set(calls.get() + 1);
            Control::Continue
        })
        .unwrap_err();
    match &e {
        Error::InvalidInput { name, reason } => {
            assert_eq!(name, "train");
            assert!(reason.contains("needs at least 2 (got 1)"), "{reason}");
            assert!(reason.contains("--image-score map"), "{reason}");
        }
        other => panic!("expected the train error, got {other:?}"),
    }
    assert_eq!(calls.get(), 0, "refused before any training step");
    let e = params(ImageScore::Map)
        .density(kde)
        .fit_images_with(one, |_| Control::Continue)
        .err();
    assert!(
        !e.as_ref()
            .is_some_and(|e| e.to_string().contains("needs at least")),
        "{e:?}"
    );
    // the Ledoit-Wolf Gaussian needs 3 rows: 3 images pass its own check, but a fold of 3-fold
    // cross-validation leaves 2; 4 images are the least
    let three: Vec<RgbImage> = (0..3).map(|i| spec().train_image(i)).collect();
    let e = params(ImageScore::Combined)
        .fit_images_with(three, |_| Control::Continue)
        .unwrap_err();
    assert!(e.to_string().contains("needs at least 4 (got 3)"), "{e}");
}
