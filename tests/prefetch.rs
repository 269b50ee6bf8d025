//! Prefetch workers change how batches are prepared, never what is trained: the same losses and
//! the same weights for any worker count (CPU, 32 px, 3 steps).
use cutpaste::model::{
    train, Classifier, ClassifierConfig, Control, FastPath, HeadConfig, Prefetch, ToySource,
    TrainParams,
};
use tch::Device;

fn run(prefetch: Prefetch) -> (Vec<f64>, Classifier) {
    let config = ClassifierConfig {
        num_classes: 3,
        head: HeadConfig::paper(),
        fast_path: FastPath::FP32,
    };
    let mut clf = Classifier::new(&config, Device::Cpu, 4).unwrap();
    let images = ToySource::synthetic_images(6, 32, 2);
    let mut source = ToySource::new(images, 2, 5).unwrap().three_way();
    let params = TrainParams::paper().steps(3).seed(4).prefetch(prefetch);
    let report = train(&mut clf, &mut source, &params, |_| Control::Continue).unwrap();
    (report.losses, clf)
}

#[test]
fn training_is_identical_for_any_prefetch_worker_count() {
    let (losses, reference) = run(Prefetch::SINGLE);
    assert_eq!(losses.len(), 3);
    for prefetch in [
        Prefetch {
            workers: 3,
            depth: 1,
        },
        Prefetch {
            workers: 2,
            depth: 4,
        },
    ] {
        let (l, clf) = run(prefetch);
        assert_eq!(l, losses, "{prefetch:?}");
        let (a, b) = (reference.named_variables(), clf.named_variables());
        for (name, t) in &a {
            assert!(t.equal(&b[name]), "{prefetch:?}: {name} differs");
        }
    }
}

#[test]
fn invalid_prefetch_is_a_typed_error_naming_it() {
    let params = TrainParams::paper().prefetch(Prefetch {
        workers: 0,
        depth: 1,
    });
    let err = params.check().unwrap_err().to_string();
    assert!(err.contains("`prefetch`"), "{err}");
}
