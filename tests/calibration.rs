//! Threshold calibration without defect samples (issue: the synthetic F1-max threshold could
//! flag every normal image). Tiny detectors on 32 px images, a few steps, CPU.
use cutpaste::detector::{CalibrationRule, ThresholdMethod};
use cutpaste::model::Precision;
use cutpaste::prelude::*;
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn tiny_params() -> DetectorParams {
    Detector::params()
        .image_size(32)
        .batch_images(4)
        .training(TrainParams::paper().steps(3))
        .device(Device::Cpu)
        .fast_path(FastPath {
            precision: Precision::Fp32,
            channels_last: false,
        })
        .seed(5)
}

/// Images of i.i.d. uniform pixel noise: a CutPaste or Scar view of noise is noise, so the
/// synthetic views cannot be told from the normal images.
fn noise(n: usize, seed: u64) -> Vec<RgbImage> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| RgbImage::from_fn(32, 32, |_, _| image::Rgb(rng.random())))
        .collect()
}

fn flagged(scores: &[f32], t: f32) -> usize {
    scores.iter().filter(|s| **s > t).count()
}

#[test]
fn inseparable_views_give_a_threshold_that_flags_at_most_one_percent_of_normals() {
    let mut det = tiny_params()
        .fit_images_with(noise(24, 1), |_| Control::Continue)
        .unwrap();
    let held_out = noise(100, 2);
    let t = det.threshold_from_synthetic(&held_out, 0).unwrap();
    let scores = det.score_batch(&held_out).unwrap();
    let c = det.calibration().expect("a calibration record").clone();
    // The premise: the views do not separate, and plain F1-max would flag most normals.
    let auroc = c.synthetic_auroc.unwrap();
    assert!(auroc < 0.9, "views separate (AUROC {auroc}): no test");
    let old = flagged(&scores, c.f1_threshold.unwrap());
    assert!(old > 50, "F1-max flags only {old} of 100 normals: no test");
    // The fix: the quantile rule, recorded as such.
    assert_eq!(c.method, ThresholdMethod::QuantileFallback, "{c:?}");
    assert_eq!(c.threshold, t);
    assert!(c.note.as_deref().unwrap().contains("separate poorly"));
    assert!(
        flagged(&scores, t) <= 1,
        "{} of 100 flagged",
        flagged(&scores, t)
    );
    // New normal images from the same distribution are rarely flagged either.
    let fresh = det.score_batch(&noise(100, 3)).unwrap();
    eprintln!(
        "views vs normals AUROC {auroc:.3}; F1-max threshold {:.2} flags {old}/100 held-out \
         normals; stored {t:.2} ({:?}) flags {}/100 held-out and {}/100 fresh normals",
        c.f1_threshold.unwrap(),
        c.method,
        flagged(&scores, t),
        flagged(&fresh, t)
    );
    assert!(
        flagged(&fresh, t) <= 10,
        "{} of 100 fresh normals flagged",
        flagged(&fresh, t)
    );
}

#[test]
fn synthetic_threshold_is_never_below_the_normal_quantile() {
    // Structured images: the views are (partly) separable, the floor still holds.
    let dir = tempfile::tempdir().unwrap();
    let root = cutpaste::data::synthetic::SyntheticSpec::new(
        cutpaste::data::synthetic::SyntheticKind::Part,
    )
    .side(32)
    .counts(12, 1, 1)
    .seed(4)
    .write(dir.path())
    .unwrap();
    let ds = Dataset::mvtec(root).unwrap();
    let mut det = tiny_params().fit(&ds).unwrap();
    let normal = ds.load_train(32).unwrap();
    let scores = det.score_batch(&normal).unwrap();
    for q in [0.5, 0.9, 0.99] {
        let rule = CalibrationRule {
            quantile: q,
            min_auroc: 0.0,
        };
        let c = det.calibrate_synthetic(&normal, 1, rule).unwrap();
        let floor = cutpaste::detector::quantile(&scores, q).unwrap();
        assert_eq!(c.quantile_threshold, Some(floor));
        assert!(c.threshold >= floor, "q {q}: {c:?}");
        assert!(flagged(&scores, c.threshold) as f64 <= (1.0 - q) * 12.0 + 1e-9);
        assert_ne!(c.method, ThresholdMethod::QuantileFallback);
    }
    // An invalid rule names its field.
    let bad = CalibrationRule {
        quantile: 0.0,
        min_auroc: 0.9,
    };
    assert!(matches!(
        det.calibrate_synthetic(&normal, 1, bad),
        Err(Error::InvalidParam { name, .. }) if name == "quantile"
    ));
}

#[test]
fn the_calibration_is_stored_in_checkpoints_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let root = cutpaste::data::synthetic::SyntheticSpec::new(
        cutpaste::data::synthetic::SyntheticKind::Part,
    )
    .side(32)
    .counts(6, 2, 2)
    .seed(1)
    .write(dir.path())
    .unwrap();
    let ds = Dataset::mvtec(root).unwrap();
    let mut det = tiny_params().fit(&ds).unwrap();
    let c = det
        .calibrate_synthetic(&noise(20, 7), 2, CalibrationRule::default())
        .unwrap();
    let path = dir.path().join("det.safetensors");
    det.save(&path).unwrap();
    let back = Detector::load(&path, Device::Cpu).unwrap();
    assert_eq!(back.calibration(), Some(&c));
    assert_eq!(back.threshold(), Some(c.threshold));
    let report = back.evaluate(&ds).unwrap();
    assert_eq!(report.calibration.as_ref(), Some(&c));
    let md = report.to_markdown();
    assert!(md.contains("| detector threshold |"), "{md}");
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert!(json["calibration"]["synthetic_auroc"].is_number(), "{json}");
    // false-positive / false-negative counts at the stored threshold
    let r = report.error_rates(c.threshold);
    let good: Vec<f32> = report
        .samples
        .iter()
        .filter(|s| !s.anomalous)
        .map(|s| s.score)
        .collect();
    let bad: Vec<f32> = report
        .samples
        .iter()
        .filter(|s| s.anomalous)
        .map(|s| s.score)
        .collect();
    assert_eq!((r.good, r.defective), (good.len(), bad.len()));
    assert_eq!(r.false_positives, flagged(&good, c.threshold));
    assert_eq!(r.false_negatives, bad.len() - flagged(&bad, c.threshold));
    // an explicit threshold replaces the record
    let mut det = back;
    det.set_threshold(1.0).unwrap();
    assert_eq!(det.calibration().unwrap().method, ThresholdMethod::Explicit);
}
