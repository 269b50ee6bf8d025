//! The builder and the fitted detector on tiny synthetic data (32 px, a few steps, CPU).
use cutpaste::data::synthetic::{SyntheticKind, SyntheticSpec};
use cutpaste::density::{DensityEstimator, FittedDensity, FittedEstimator};
use cutpaste::model::Precision;
use cutpaste::prelude::*;
use cutpaste::Missing;
use proptest::prelude::*;

fn tiny_params() -> DetectorParams {
    Detector::params()
        .image_size(32)
        .batch_images(2)
        .training(TrainParams::paper().steps(3))
        .device(Device::Cpu)
        .fast_path(FastPath {
            precision: Precision::Fp32,
            channels_last: false,
        })
        .seed(3)
}

fn tiny_data(dir: &std::path::Path) -> Dataset {
    let root = SyntheticSpec::new(SyntheticKind::Part)
        .side(32)
        .counts(6, 3, 3)
        .seed(1)
        .write(dir)
        .unwrap();
    Dataset::mvtec(root).unwrap()
}

#[test]
fn check_names_the_bad_parameter() {
    let name_of = |p: DetectorParams| match p.check() {
        Err(e @ Error::InvalidParam { .. }) => {
            assert_eq!(e.kind(), ErrorKind::InvalidParam);
            let Error::InvalidParam { name, .. } = e else {
                unreachable!()
            };
            name
        }
        other => panic!("expected InvalidParam, got {other:?}"),
    };
    assert_eq!(name_of(tiny_params().image_size(16)), "image_size");
    assert_eq!(name_of(tiny_params().batch_images(0)), "batch_images");
    assert_eq!(
        name_of(tiny_params().training(TrainParams::paper().steps(0))),
        "steps"
    );
    assert_eq!(
        name_of(
            tiny_params().backbone(Backbone::resnet18().pretrained("no/such/file.safetensors"))
        ),
        "backbone.pretrained"
    );
    // the checked parameters read like the builder's and give it back unchanged
    let valid = tiny_params().check().unwrap();
    assert_eq!(valid.input_size(), 32);
    assert_eq!(valid.into_inner(), tiny_params());
}

/// Too few images for the Ledoit–Wolf Gaussian is an error before training starts, with advice
/// that works (the KDE fits one image).
#[test]
fn one_training_image_fails_before_training_with_working_advice() {
    let image = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, 0]));
    let mut trained = false;
    let err = tiny_params()
        .fit_images_with(vec![image.clone()], |e| {
            trained |= matches!(e, FitEvent::Train(_));
            Control::Continue
        })
        .unwrap_err();
    assert!(!trained, "training ran before the error");
    assert!(matches!(err, Error::SingularCovariance { .. }), "{err:?}");
    assert!(err.to_string().contains("--density kde"), "{err}");
    let det = tiny_params()
        .density(Density::kde())
        .fit_images_with(vec![image.clone()], |_| Control::Continue)
        .unwrap();
    assert!(det.score(&image).unwrap().is_finite());
}

#[test]
fn fit_score_threshold_predict_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let ds = tiny_data(dir.path());
    let mut steps_seen = 0;
    let mut det = tiny_params()
        .fit_with(&ds, |e| {
            if let FitEvent::Train(p) = e {
                steps_seen = p.step;
            }
            Control::Continue
        })
        .unwrap();
    assert_eq!(steps_seen, 3);

    // The density is fitted on the un-augmented training images: its mean is the mean of their
    // L2-normalised pooled features.
    let train = ds.load_train(32).unwrap();
    let f = det.embed(&train).unwrap();
    assert_eq!(f.dim(), (6, 512));
    let FittedDensity::Gaussian(g) = det.density() else {
        panic!("default density is Gaussian")
    };
    for j in 0..512 {
        let m: f64 = (0..6)
            .map(|i| {
                let norm = f
                    .row(i)
                    .iter()
                    .map(|v| (*v as f64).powi(2))
                    .sum::<f64>()
                    .sqrt();
                f[[i, j]] as f64 / norm
            })
            .sum::<f64>()
            / 6.0;
        assert!(
            (m - g.mean()[j]).abs() < 1e-5,
            "dim {j}: {m} vs {}",
            g.mean()[j]
        );
    }

    // score == score_batch (batched convolutions may round differently)
    let test = ds.load_test(32).unwrap();
    let batch = det.score_batch(&test).unwrap();
    for (img, b) in test.iter().zip(&batch) {
        let s = det.score(img).unwrap();
        assert!((s - b).abs() <= 1e-3 * b.abs().max(1.0), "{s} vs {b}");
    }

    // thresholds and predictions
    let no_threshold = det.predict(&test[0]).unwrap_err();
    assert_eq!(no_threshold.kind(), ErrorKind::NotFitted);
    assert!(matches!(
        no_threshold,
        Error::NotFitted {
            what: Missing::Threshold,
            ..
        }
    ));
    assert!(no_threshold.to_string().contains("set_threshold"));
    let train_scores = det.score_batch(&train).unwrap();
    let t = det.threshold_from_quantile(&train, 1.0).unwrap();
    assert_eq!(t, train_scores.iter().cloned().fold(f32::MIN, f32::max));
    for img in test.iter().chain(&train) {
        let p = det.predict(img).unwrap();
        assert_eq!(p.score, det.score(img).unwrap());
        assert_eq!(p.is_anomalous, p.score > t);
    }
    let labels: Vec<bool> = ds.test.iter().map(|s| s.is_anomalous()).collect();
    let t = det.threshold_from_f1(&test, &labels).unwrap();
    let best = cutpaste::metrics::f1_max(&batch, &labels).unwrap();
    let predicted: Vec<bool> = batch.iter().map(|s| *s > t).collect();
    let tp = predicted
        .iter()
        .zip(&labels)
        .filter(|(p, l)| **p && **l)
        .count() as f64;
    let fp = predicted
        .iter()
        .zip(&labels)
        .filter(|(p, l)| **p && !**l)
        .count() as f64;
    let fneg = predicted
        .iter()
        .zip(&labels)
        .filter(|(p, l)| !**p && **l)
        .count() as f64;
    assert!((2.0 * tp / (2.0 * tp + fp + fneg) - best.f1).abs() < 1e-9);

    // synthetic validation: threshold between the normal images and their CutPaste/Scar views
    let t_syn = det.threshold_from_synthetic(&train, 9).unwrap();
    assert_eq!(det.threshold(), Some(t_syn));
    assert_eq!(det.threshold_from_synthetic(&train, 9).unwrap(), t_syn);
    assert!(matches!(
        det.threshold_from_synthetic(&[], 9),
        Err(Error::InvalidInput { .. })
    ));

    let report = det.evaluate(&ds).unwrap();
    assert_eq!(report.n_test, 6);
    assert_eq!(report.samples.len(), 6);
    assert_eq!(report.labels(), labels);
    let auc = cutpaste::metrics::roc_auc(&report.scores(), &labels).unwrap();
    assert_eq!(report.image_auroc, auc);
    assert!(report.to_markdown().contains("image AUROC"));
}

#[test]
fn same_seed_same_scores_on_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let ds = tiny_data(dir.path());
    let test = ds.load_test(32).unwrap();
    let a = tiny_params().fit(&ds).unwrap().score_batch(&test).unwrap();
    let b = tiny_params().fit(&ds).unwrap().score_batch(&test).unwrap();
    assert_eq!(a, b);
    let c = tiny_params()
        .seed(4)
        .fit(&ds)
        .unwrap()
        .score_batch(&test)
        .unwrap();
    assert_ne!(a, c);
}

/// A stop during training is an outcome: training ends at that step and the fit completes a
/// usable detector that records where it stopped (and keeps the record through a checkpoint).
/// A stop first answered during feature extraction cannot complete a model: `Error::Stopped`.
#[test]
fn a_stop_during_training_keeps_a_partial_model() {
    let dir = tempfile::tempdir().unwrap();
    let ds = tiny_data(dir.path());
    let (mut steps, mut feature_events) = (0, 0);
    let det = tiny_params()
        .fit_with(&ds, |e| match e {
            FitEvent::Train(p) => {
                steps = p.step;
                Control::Stop
            }
            FitEvent::Features { .. } => {
                // ignored: the stop was already honoured by ending training
                feature_events += 1;
                Control::Stop
            }
            _ => Control::Continue,
        })
        .unwrap();
    assert_eq!(steps, 1);
    assert!(feature_events > 0);
    assert!(det.stopped_early());
    let rec = &det.training_record()[0];
    assert_eq!(
        (rec.planned_steps, rec.stopped_at, rec.steps_done()),
        (3, Some(1), 1)
    );
    let test = ds.load_test(32).unwrap();
    let scores = det.score_batch(&test).unwrap();
    assert!(scores.iter().all(|s| s.is_finite()), "{scores:?}");
    let back = Detector::from_bytes(&det.to_bytes().unwrap(), Device::Cpu).unwrap();
    assert_eq!(back.training_record(), det.training_record());
    assert_eq!(back.score_batch(&test).unwrap(), scores);

    let err = tiny_params()
        .fit_with(&ds, |e| match e {
            FitEvent::Features { .. } => Control::Stop,
            _ => Control::Continue,
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Stopped);
    assert!(
        matches!(&err, Error::Stopped { stage, .. } if stage == "feature extraction"),
        "{err:?}"
    );
}

/// Re-serialises a safetensors file keeping the tensors `keep` accepts and the metadata `edit`
/// returns.
fn rewrite(
    src: &std::path::Path,
    dst: &std::path::Path,
    keep: impl Fn(&str) -> bool,
    edit: impl Fn(&mut std::collections::HashMap<String, String>),
) {
    use safetensors::SafeTensors;
    let bytes = std::fs::read(src).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut md = header.metadata().clone().unwrap();
    edit(&mut md);
    let views: Vec<(String, safetensors::tensor::TensorView)> =
        st.tensors().into_iter().filter(|(n, _)| keep(n)).collect();
    let out = safetensors::tensor::serialize(views, &Some(md)).unwrap();
    std::fs::write(dst, out).unwrap();
}

#[test]
fn save_load_roundtrip_and_broken_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let ds = tiny_data(dir.path());
    let mut det = tiny_params().fit(&ds).unwrap();
    det.set_threshold(1.5).unwrap();
    let test = ds.load_test(32).unwrap();
    let before = det.score_batch(&test).unwrap();
    let path = dir.path().join("det.safetensors");
    det.save(&path).unwrap();
    let loaded = Detector::load(&path, Device::Cpu).unwrap();
    assert_eq!(loaded.score_batch(&test).unwrap(), before);
    assert_eq!(loaded.threshold(), Some(1.5));
    assert_eq!(loaded.params_used().input_size(), 32);
    // bytes and copies: the same scores; a copy can move to another thread (Send)
    let from_bytes = Detector::from_bytes(&det.to_bytes().unwrap(), Device::Cpu).unwrap();
    assert_eq!(from_bytes.score_batch(&test).unwrap(), before);
    let copy = det.try_clone().unwrap();
    let (images, want) = (test.clone(), before.clone());
    let scored = std::thread::spawn(move || copy.score_batch(&images).unwrap())
        .join()
        .unwrap();
    assert_eq!(scored, want);

    // torchvision-style names are in the file
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names: Vec<String> = st.names().into_iter().cloned().collect();
    for n in [
        "conv1.weight",
        "layer4.1.bn2.running_var",
        "density.mean",
        "density.covariance",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }

    let is_ckpt = |p: &std::path::Path, needle: &str| match Detector::load(p, Device::Cpu) {
        Err(e @ (Error::Checkpoint { .. } | Error::WeightsMismatch { .. })) => {
            assert_eq!(e.kind(), ErrorKind::Checkpoint);
            let msg = e.to_string();
            assert!(msg.contains(&p.display().to_string()), "no path in: {msg}");
            assert!(msg.contains(needle), "'{needle}' not in: {msg}");
        }
        other => panic!(
            "expected a checkpoint error for {}, got {other:?}",
            p.display()
        ),
    };
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    is_ckpt(&truncated, "truncated");

    let foreign = dir.path().join("foreign.safetensors");
    det.classifier().save_weights(&foreign).unwrap();
    is_ckpt(&foreign, "not a cutpaste detector checkpoint");

    let future = dir.path().join("future.safetensors");
    rewrite(
        &path,
        &future,
        |_| true,
        |md| {
            md.insert("format_version".into(), "99".into());
        },
    );
    is_ckpt(&future, "format version");

    let no_cov = dir.path().join("no_cov.safetensors");
    rewrite(&path, &no_cov, |n| n != "density.covariance", |_| {});
    is_ckpt(&no_cov, "density");

    let no_conv = dir.path().join("no_conv.safetensors");
    rewrite(&path, &no_conv, |n| n != "layer2.0.conv1.weight", |_| {});
    is_ckpt(&no_conv, "layer2.0.conv1.weight");

    // a failed save leaves nothing behind and never a torn file
    assert!(det
        .save(dir.path().join("no/such/dir/x.safetensors"))
        .is_err());
    let leftovers = std::fs::read_dir(dir.path()).unwrap().filter(|e| {
        e.as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp")
    });
    assert_eq!(leftovers.count(), 0);
}

/// A user-defined density: Euclidean distance to the training mean (higher = more anomalous).
#[derive(Debug)]
struct MeanDistance;

struct FittedMean {
    mean: ndarray::Array1<f32>,
    n: usize,
}

impl DensityEstimator for MeanDistance {
    type Fitted = FittedMean;
    fn fit(&self, x: ndarray::ArrayView2<f32>) -> cutpaste::Result<FittedMean> {
        Ok(FittedMean {
            mean: x.mean_axis(ndarray::Axis(0)).unwrap(),
            n: x.nrows(),
        })
    }
}

impl FittedEstimator for FittedMean {
    fn score(&self, x: ndarray::ArrayView2<f32>) -> cutpaste::Result<ndarray::Array1<f32>> {
        Ok(x.rows()
            .into_iter()
            .map(|r| (&r - &self.mean).mapv(|v| v * v).sum().sqrt())
            .collect())
    }
    fn dim(&self) -> usize {
        self.mean.len()
    }
    fn n_train(&self) -> usize {
        self.n
    }
}

/// The builder takes a user-defined estimator: fit → score gives that estimator's scores of
/// the detector's features; saving it is a typed error that names the fix.
#[test]
fn a_user_defined_density_plugs_into_the_builder() {
    let dir = tempfile::tempdir().unwrap();
    let ds = tiny_data(dir.path());
    let det = tiny_params()
        .density(Density::custom(MeanDistance))
        .fit(&ds)
        .unwrap();
    let FittedDensity::Custom(c) = det.density() else {
        panic!("expected the custom density, got {:?}", det.density())
    };
    assert!(c.density().name().ends_with("MeanDistance"));
    assert_eq!((det.density().dim(), c.n_train()), (512, 6));

    // the same estimator fitted by hand on the detector's features gives the same scores
    let train = ds.load_train(32).unwrap();
    let test = ds.load_test(32).unwrap();
    let by_hand = MeanDistance
        .fit(det.embed(&train).unwrap().view())
        .unwrap()
        .score(det.embed(&test).unwrap().view())
        .unwrap();
    let scores = det.score_batch(&test).unwrap();
    for (s, want) in scores.iter().zip(&by_hand) {
        assert!(
            (s - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{s} vs {want}"
        );
    }
    let report = det.evaluate(&ds).unwrap();
    assert_eq!(report.scores(), scores);

    let err = det.save(dir.path().join("custom.safetensors")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("Density::gaussian()"), "{err}");
    assert!(!dir.path().join("custom.safetensors").exists());
}

/// One generated value of a parameter: valid, or invalid with the name `check()` must report.
fn field<T: std::fmt::Debug + Clone + 'static>(
    valid: impl Strategy<Value = T> + 'static,
    invalid: impl Strategy<Value = T> + 'static,
    name: &'static str,
    allow_bad: bool,
) -> BoxedStrategy<(T, Option<&'static str>)> {
    let ok = valid.prop_map(|v| (v, None));
    if allow_bad {
        prop_oneof![4 => ok, 1 => invalid.prop_map(move |v| (v, Some(name)))].boxed()
    } else {
        ok.boxed()
    }
}

/// A dense localizer with tiny budgets; the names of its invalid values.
fn localizer_strategy(allow_bad: bool) -> BoxedStrategy<(LocalizerParams, Vec<&'static str>)> {
    (
        field(1usize..=2, Just(0usize), "localizer.steps", allow_bad),
        field(
            1usize..=2,
            Just(0usize),
            "localizer.batch_images",
            allow_bad,
        ),
        field(
            1usize..=8,
            prop_oneof![Just(0usize), Just(1000)],
            "localizer.pca_dim",
            allow_bad,
        ),
        field(1usize..=4, Just(0usize), "localizer.pca_images", allow_bad),
        field(
            prop_oneof![Just(4.0), 1.0..10.0f64],
            prop_oneof![Just(0.0), Just(-1.0), Just(f64::NAN)],
            "localizer.sigma",
            allow_bad,
        ),
        field(
            Just(32u32),
            prop_oneof![Just(16u32), Just(8)],
            "localizer.crop_size",
            allow_bad,
        ),
        field(
            prop_oneof![Just(0u32), Just(32), Just(256)],
            prop_oneof![Just(8u32), Just(31)],
            "localizer.resolution",
            allow_bad,
        ),
        field(
            1usize..=512,
            Just(0usize),
            "localizer.feature_batch",
            allow_bad,
        ),
    )
        .prop_map(|(steps, batch, pca, pca_images, sigma, crop, res, fb)| {
            let lp = LocalizerParams::dense()
                .steps(steps.0)
                .batch_images(batch.0)
                .pca_dim(pca.0)
                .pca_images(pca_images.0)
                .sigma(sigma.0)
                .crop_size(crop.0)
                .resolution(res.0)
                .feature_batch(fb.0);
            let bad = [
                steps.1,
                batch.1,
                pca.1,
                pca_images.1,
                sigma.1,
                crop.1,
                res.1,
                fb.1,
            ];
            (lp, bad.into_iter().flatten().collect())
        })
        .boxed()
}

/// Tiny detector parameters (CPU, fp32, 32–40 px, ≤ 2 steps), each value valid or (with
/// `allow_bad`) sometimes invalid; with the names of the invalid ones.
fn params_strategy(allow_bad: bool) -> BoxedStrategy<(DetectorParams, Vec<&'static str>)> {
    let training = (
        field(1usize..=2, Just(0usize), "steps", allow_bad),
        field(
            1e-4..0.05f64,
            prop_oneof![Just(0.0), Just(-0.1), Just(f64::NAN), Just(f64::INFINITY)],
            "learning_rate",
            allow_bad,
        ),
        field(
            0.0..0.95f64,
            prop_oneof![Just(1.0), Just(-0.5), Just(f64::NAN)],
            "momentum",
            allow_bad,
        ),
        field(
            0.0..1e-3f64,
            prop_oneof![Just(-1e-3), Just(f64::NAN)],
            "weight_decay",
            allow_bad,
        ),
    );
    (
        field(
            prop_oneof![Just(32u32), Just(40)],
            prop_oneof![Just(0u32), Just(16), Just(31), Just(5000)],
            "image_size",
            allow_bad,
        ),
        field(1usize..=2, Just(0usize), "batch_images", allow_bad),
        training,
        prop_oneof![Just(Density::gaussian()), Just(Density::kde())],
        prop_oneof![
            Just(Augmentation::three_way()),
            Just(Augmentation::cutpaste()),
            Just(Augmentation::union())
        ],
        proptest::option::weighted(0.3, localizer_strategy(allow_bad)),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(
            move |(size, batch, (steps, lr, momentum, wd), density, aug, loc, map, seed)| {
                let mut bad: Vec<&'static str> = [size.1, batch.1, steps.1, lr.1, momentum.1, wd.1]
                    .into_iter()
                    .flatten()
                    .collect();
                let training = TrainParams::paper()
                    .steps(steps.0)
                    .learning_rate(lr.0)
                    .momentum(momentum.0)
                    .weight_decay(wd.0);
                let mut p = Detector::params()
                    .device(Device::Cpu)
                    .fast_path(FastPath {
                        precision: Precision::Fp32,
                        channels_last: false,
                    })
                    .image_size(size.0)
                    .batch_images(batch.0)
                    .training(training)
                    .density(density)
                    .augmentation(aug)
                    .seed(seed);
                // ImageScore::Map needs a localizer: without one it is an invalid combination
                let map = map && (allow_bad || loc.is_some());
                if map {
                    p = p.image_score(ImageScore::Map);
                    if loc.is_none() {
                        bad.push("image_score");
                    }
                }
                if let Some((lp, loc_bad)) = loc {
                    p = p.localizer(lp);
                    bad.extend(loc_bad);
                }
                (p, bad)
            },
        )
        .boxed()
}

/// Six 32 px normal images, in memory.
fn tiny_images() -> Vec<image::RgbImage> {
    let spec = SyntheticSpec::new(SyntheticKind::Part).side(32).seed(1);
    (0..6).map(|i| spec.train_image(i)).collect()
}

proptest! {
    // each case fits a (tiny) detector: a few cases only
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// Whatever passes `check()` fits and scores without an error or a panic.
    #[test]
    fn checked_params_fit_and_score((params, bad) in params_strategy(false)) {
        prop_assert!(bad.is_empty());
        let valid = params.check().map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let images = tiny_images();
        // a network trained for 1 step on batches of one source image (its 2–3 views) can
        // diverge: BatchNorm over so few values at the deepest layers' 1×1–2×2 maps gives
        // gradients of 1e3–1e4, and one SGD step blows the weights up. Both cases found so far
        // (saved in pipeline.proptest-regressions) had `batch_images` 1: the dense localizer's
        // layer3 features and the image model's pooled features. That must be the named
        // `features` error that says the training diverged, never a LAPACK code or a panic.
        let one_image_batches = format!("{params:?}").contains("batch_images: 1,");
        let det = match valid.fit_images_with(images.clone(), |_| Control::Continue) {
            Ok(det) => det,
            Err(Error::InvalidInput { name, reason })
                if one_image_batches && name == "features" && reason.contains("diverged") =>
            {
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(format!("fit failed: {e}"))),
        };
        let scores = det.score_batch(&images[..2]).unwrap();
        prop_assert!(scores.iter().all(|s| s.is_finite()), "{:?}", scores);
    }
}

proptest! {
    // check() alone is cheap: many cases
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `check()` passes exactly when every value is valid, and otherwise names one of the
    /// invalid parameters, in the error's `name` and in its message.
    #[test]
    fn check_fails_exactly_on_bad_values_and_names_one((params, bad) in params_strategy(true)) {
        match params.check() {
            Ok(_) => prop_assert!(bad.is_empty(), "check passed with bad {:?}", bad),
            Err(e) => {
                let msg = e.to_string();
                let Error::InvalidParam { name, .. } = &e else {
                    return Err(TestCaseError::fail(format!("not InvalidParam: {e:?}")));
                };
                prop_assert!(bad.contains(&name.as_str()), "{} not in {:?}: {}", name, bad, msg);
                prop_assert!(msg.contains(name.as_str()), "{}", msg);
            }
        }
    }
}

/// The detector of the committed fixtures (`tests/fixtures/detector_v1_params.json`,
/// `tiny_detector_scores.json`, written by the crate before the parameters were one record; the
/// map scores rewritten after the localizer Gaussians' precision fix):
/// [`tiny_params`] with a tiny dense localizer, threshold 1.5.
fn fixture_detector(ds: &Dataset) -> Detector {
    // full covariances, as when the fixtures were written (dense() now defaults to diagonal)
    let loc = LocalizerParams::dense()
        .covariance(PatchCovariance::Full)
        .steps(2)
        .batch_images(2)
        .pca_dim(8)
        .pca_images(4);
    let mut det = tiny_params().localizer(loc).fit(ds).unwrap();
    det.set_threshold(1.5).unwrap();
    det
}

fn fixture(name: &str) -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn assert_close(got: &[f32], want: &serde_json::Value, what: &str) {
    let want: Vec<f32> = serde_json::from_value(want.clone()).unwrap();
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g - w).abs() <= 1e-6 * w.abs().max(1.0),
            "{what}: {got:?} vs {want:?}"
        );
    }
}

/// A fixed-seed detector scores as the code before the parameters were one record did, and a
/// checkpoint in that format (1) loads as the same detector: same scores, same parameters as
/// a format-2 round trip. The format-1 file is made here: this detector's tensors (their names
/// and layout did not change) with the committed format-1 metadata.
#[test]
fn format_1_checkpoints_load_and_the_scores_did_not_change() {
    let dir = tempfile::tempdir().unwrap();
    let ds = tiny_data(dir.path());
    let det = fixture_detector(&ds);
    let test = ds.load_test(32).unwrap();
    let pooled = det.score_batch(&test).unwrap();
    let map = det.localizer().unwrap().image_scores(&test).unwrap();
    let want = fixture("tiny_detector_scores.json");
    assert_close(
        &pooled,
        &want["pooled"],
        "pooled scores against the fixture",
    );
    assert_close(&map, &want["map"], "map scores against the fixture");

    let v2 = dir.path().join("v2.safetensors");
    det.save(&v2).unwrap();
    let v1 = dir.path().join("v1.safetensors");
    let v1_json = fixture("detector_v1_params.json").to_string();
    rewrite(
        &v2,
        &v1,
        |_| true,
        |md| {
            md.insert("format_version".into(), "1".into());
            md.insert("params".into(), v1_json.clone());
        },
    );
    let old = Detector::load(&v1, Device::Cpu).unwrap();
    let new = Detector::load(&v2, Device::Cpu).unwrap();
    assert_eq!(old.score_batch(&test).unwrap(), pooled);
    assert_eq!(old.localizer().unwrap().image_scores(&test).unwrap(), map);
    assert_eq!(new.score_batch(&test).unwrap(), pooled);
    assert_eq!(old.threshold(), Some(1.5));
    assert_eq!(old.params_used(), new.params_used());
    assert_eq!(old.params_used(), det.params_used());
    assert_eq!(old.training_record().len(), 2);
    let lp = old.params_used().localizer_config().unwrap();
    assert_eq!(lp.get_fitted_size(), Some((32, 32)));
    assert_eq!(lp.get_density(), PatchDensity::Tied);
    assert_eq!(old.params_used().training_config().get_steps(), 3);
}

/// The parameters are one serde record: a round trip keeps every value, missing fields take
/// the defaults, and the checkpoint stores that record (without machine-local paths).
#[test]
fn detector_params_are_one_serde_record() {
    let p = tiny_params()
        .training(
            TrainParams::paper()
                .steps(7)
                .learning_rate(0.01)
                .budget(std::time::Duration::from_millis(2500))
                .prefetch(cutpaste::model::Prefetch {
                    workers: 2,
                    depth: 3,
                })
                .checkpoint("run.safetensors", 5, true),
        )
        .density(Density::kde())
        .localizer(LocalizerParams::dense().steps(2).resolution(64))
        .image_score(ImageScore::Map)
        .device(Device::Cuda(1));
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["device"], "cuda:1");
    assert_eq!(json["training"]["budget_seconds"], 2.5);
    let back: DetectorParams = serde_json::from_value(json).unwrap();
    assert_eq!(back, p);
    let partial: DetectorParams =
        serde_json::from_str(r#"{"image_size": 64, "training": {"steps": 9}}"#).unwrap();
    assert_eq!(
        partial,
        Detector::params()
            .image_size(64)
            .training(TrainParams::paper().steps(9))
    );
    assert!(serde_json::from_str::<DetectorParams>(r#"{"device": "gpu"}"#).is_err());
    assert!(
        serde_json::from_str::<DetectorParams>(r#"{"training": {"budget_seconds": -1}}"#).is_err()
    );
    // a user-defined density has no serial form
    assert!(serde_json::to_string(&p.clone().density(Density::custom(MeanDistance))).is_err());

    // the checkpoint's `params` metadata holds the record
    let dir = tempfile::tempdir().unwrap();
    let ds = tiny_data(dir.path());
    // a pretrained backbone: a fitted classifier's weights without its head
    let weights = dir.path().join("weights.safetensors");
    let pretrained = dir.path().join("backbone.safetensors");
    let det = tiny_params().fit(&ds).unwrap();
    det.classifier().save_weights(&weights).unwrap();
    rewrite(&weights, &pretrained, |n| !n.starts_with("head."), |_| {});
    let det = tiny_params()
        .backbone(Backbone::resnet18().pretrained(&pretrained))
        .fit(&ds)
        .unwrap();
    let bytes = det.to_bytes().unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let md = header.metadata().clone().unwrap();
    assert_eq!(md["format_version"], "2");
    let meta: serde_json::Value = serde_json::from_str(&md["params"]).unwrap();
    let stored: DetectorParams = serde_json::from_value(meta["params"].clone()).unwrap();
    assert_eq!(stored.input_size(), 32);
    assert_eq!(stored.training_config().get_seed(), 3);
    assert!(
        !md["params"].contains("backbone.safetensors"),
        "{}",
        md["params"]
    );
    let back = Detector::from_bytes(&bytes, Device::Cpu).unwrap();
    assert_eq!(back.params_used(), &stored);
}
