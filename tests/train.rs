//! The training loop: learning, determinism, resume = uninterrupted, stop, errors, progress.
//! 32 px images, batches of 8 views, a few steps each.
use cutpaste::model::{
    cosine_lr, train, Batch, Classifier, ClassifierConfig, Control, FastPath, HeadConfig,
    Precision, Progress, ToySource, TrainParams, TrainReport,
};
use cutpaste::Error;
use tch::{Device, Tensor};

const CPU: Device = Device::Cpu;

fn classifier(seed: u64, precision: Precision) -> Classifier {
    let config = ClassifierConfig {
        num_classes: 2,
        head: HeadConfig::paper(),
        fast_path: FastPath {
            precision,
            channels_last: precision == Precision::Bf16,
        },
    };
    Classifier::new(&config, CPU, seed).unwrap()
}

fn source(seed: u64) -> ToySource {
    ToySource::new(ToySource::synthetic_images(6, 32, 3), 4, seed).unwrap()
}

fn run(clf: &mut Classifier, params: &TrainParams, src_seed: u64) -> TrainReport {
    train(clf, &mut source(src_seed), params, |_| Control::Continue).unwrap()
}

fn assert_same_weights(a: &Classifier, b: &Classifier) {
    let (va, vb) = (a.named_variables(), b.named_variables());
    for (k, t) in &va {
        assert!(t.equal(&vb[k]), "{k} differs");
    }
}

#[test]
fn same_seed_same_loss_curve_on_cpu_different_seed_different_curve() {
    single_thread();
    let params = TrainParams::paper().steps(4).seed(1);
    let (mut a, mut b, mut c) = (
        classifier(1, Precision::Fp32),
        classifier(1, Precision::Fp32),
        classifier(1, Precision::Fp32),
    );
    let (ra, rb, rc) = (
        run(&mut a, &params, 5),
        run(&mut b, &params, 5),
        run(&mut c, &params, 6),
    );
    assert_eq!(ra.losses.len(), 4);
    assert_eq!(ra.losses, rb.losses, "bitwise equal on CPU");
    assert_same_weights(&a, &b);
    assert_ne!(
        ra.losses[1..],
        rc.losses[1..],
        "another data seed gives another curve"
    );
}

/// 4 smooth 32 px images (label 0) and the same with a white 10×10 square (label 1).
fn easy_batch() -> Batch {
    let mut batch = Batch::default();
    for (i, img) in ToySource::synthetic_images(4, 32, 3)
        .into_iter()
        .enumerate()
    {
        let mut marked = img.clone();
        let o = 4 + 5 * i as u32;
        for y in o..o + 10 {
            for x in (20 - o)..(30 - o) {
                marked.put_pixel(x, y, image::Rgb([255, 255, 255]));
            }
        }
        batch.images.extend([img, marked]);
        batch.labels.extend([0, 1]);
    }
    batch
}

/// Trains 6 steps on `easy_batch` over and over.
fn fit_easy(precision: Precision) -> TrainReport {
    let batch = easy_batch();
    let mut same = move |_step: usize| Ok(batch.clone());
    let params = TrainParams::paper().steps(6).seed(3);
    let mut clf = classifier(3, precision);
    train(&mut clf, &mut same, &params, |_| Control::Continue).unwrap()
}

#[test]
fn a_few_sgd_steps_on_one_batch_lower_its_loss() {
    single_thread();
    let losses = fit_easy(Precision::Fp32).losses;
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(
        first > 0.5,
        "a fresh 2-class head starts near ln 2: {first}"
    );
    assert!(last < 0.1 * first, "loss {first} -> {last}: {losses:?}");
}

#[test]
fn bf16_channels_last_training_tracks_fp32() {
    single_thread();
    let fp32 = fit_easy(Precision::Fp32).losses;
    let bf16 = fit_easy(Precision::Bf16).losses;
    for (a, b) in fp32.iter().zip(&bf16) {
        assert!(
            (a - b).abs() < 0.03 + 0.1 * a,
            "fp32 {fp32:?} vs bf16 {bf16:?}"
        );
    }
    assert!(*bf16.last().unwrap() < 0.1 * bf16[0], "{bf16:?}");
    // Master weights stay fp32.
    let clf = classifier(5, Precision::Bf16);
    let w: Tensor = clf.named_variables()["layer4.1.conv2.weight"].shallow_clone();
    assert_eq!(w.kind(), tch::Kind::Float);
}

/// The machine running the tests is small and shared: one intra-op thread avoids OpenMP
/// spin-waiting against other processes (results are the same with any thread count).
fn single_thread() {
    tch::set_num_threads(1);
}

#[test]
fn resume_from_checkpoint_equals_the_uninterrupted_run() {
    single_thread();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("run.safetensors");
    let base = TrainParams::paper().steps(5).seed(2);
    let mut whole = classifier(4, Precision::Fp32);
    let full = run(&mut whole, &base, 9);

    let params = base.clone().checkpoint(&ckpt, 2, true);
    let mut first = classifier(4, Precision::Fp32);
    let stopped = train(&mut first, &mut source(9), &params, |p| {
        if p.step == 3 {
            Control::Stop
        } else {
            Control::Continue
        }
    })
    .unwrap();
    assert_eq!(stopped.stopped_at, Some(3));
    assert_eq!(stopped.losses, full.losses[..3]);
    assert_eq!(full.stopped_at, None);
    // Resume into a classifier with other initial weights: everything comes from the file.
    let mut resumed = classifier(99, Precision::Fp32);
    let rest = run(&mut resumed, &params, 9);
    assert_eq!(rest.start_step, 3);
    assert_eq!(rest.losses, full.losses[3..]);
    assert_same_weights(&whole, &resumed);
    // Resuming a finished run does nothing.
    let again = run(&mut resumed, &params, 9);
    assert!(again.losses.is_empty() && again.start_step == 5);
    // The checkpoint is also a weights file; only it is left in the folder.
    let mut reloaded = classifier(0, Precision::Fp32);
    reloaded.load_weights(&ckpt).unwrap();
    assert_same_weights(&whole, &reloaded);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn resuming_with_another_schedule_is_a_checkpoint_error() {
    single_thread();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("run.safetensors");
    let params = TrainParams::paper().steps(2).checkpoint(&ckpt, 1, true);
    run(&mut classifier(0, Precision::Fp32), &params, 0);
    let other = params.clone().learning_rate(0.01);
    let err = train(
        &mut classifier(0, Precision::Fp32),
        &mut source(0),
        &other,
        |_| Control::Continue,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err:?}");
    assert!(err.to_string().contains("same steps"), "{err}");
}

#[test]
fn callback_sees_every_step_and_can_stop() {
    single_thread();
    let mut seen: Vec<Progress> = vec![];
    let params = TrainParams::paper().steps(6);
    let report = train(
        &mut classifier(0, Precision::Fp32),
        &mut source(1),
        &params,
        |p| {
            seen.push(p.clone());
            if p.step == 2 {
                Control::Stop
            } else {
                Control::Continue
            }
        },
    )
    .unwrap();
    assert_eq!(report.stopped_at, Some(2));
    assert_eq!(report.losses.len(), 2);
    assert_eq!(seen.iter().map(|p| p.step).collect::<Vec<_>>(), vec![1, 2]);
    for p in &seen {
        assert_eq!(p.steps, 6);
        assert_eq!(p.learning_rate, cosine_lr(0.03, p.step - 1, 6));
        assert!(p.images_per_sec > 0.0 && p.loss.is_finite());
        assert!((0.0..=1.0).contains(&p.accuracy));
        // 8 views per step: accuracy is a multiple of 1/8.
        assert!((p.accuracy * 8.0 - (p.accuracy * 8.0).round()).abs() < 1e-6);
    }
    assert!(seen[1].eta > std::time::Duration::ZERO);
}

#[test]
fn empty_and_bad_batches_are_typed_errors() {
    single_thread();
    assert!(matches!(
        ToySource::new(vec![], 4, 0),
        Err(Error::EmptyDataset { .. })
    ));
    let params = TrainParams::paper().steps(3);
    let mut empty = |_step: usize| Ok(Batch::default());
    let err = train(
        &mut classifier(0, Precision::Fp32),
        &mut empty,
        &params,
        |_| Control::Continue,
    );
    assert!(matches!(err, Err(Error::EmptyDataset { .. })), "{err:?}");
    let img = image::RgbImage::new(32, 32);
    let mut bad = move |_step: usize| {
        Ok(Batch {
            images: vec![img.clone(), img.clone()],
            labels: vec![0, 5],
        })
    };
    let err = train(
        &mut classifier(0, Precision::Fp32),
        &mut bad,
        &params,
        |_| Control::Continue,
    );
    assert!(matches!(err, Err(Error::InvalidInput { ref name, .. }) if name == "batch.labels"));
    let mut failing = |step: usize| -> cutpaste::Result<Batch> {
        Err(Error::invalid_param(
            "augmentation",
            format!("broken at {step}"),
        ))
    };
    let err = train(
        &mut classifier(0, Precision::Fp32),
        &mut failing,
        &params,
        |_| Control::Continue,
    );
    assert!(err.unwrap_err().to_string().contains("broken at 0"));
    let zero = TrainParams::paper().steps(0);
    let err = train(
        &mut classifier(0, Precision::Fp32),
        &mut source(0),
        &zero,
        |_| Control::Continue,
    );
    assert!(matches!(err, Err(Error::InvalidParam { ref name, .. }) if name == "steps"));
}
