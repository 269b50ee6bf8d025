//! Backbone, head and classifier: torchvision names, parameter count, output shapes, BatchNorm
//! modes, pretrained loading and its typed errors. Tiny inputs (32–64 px).
use cutpaste::model::{
    Classifier, ClassifierConfig, FastPath, HeadConfig, Precision, RESNET18_PARAMS,
};
use cutpaste::Error;
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

const CPU: Device = Device::Cpu;

fn classifier(num_classes: i64, seed: u64) -> Classifier {
    // Small shared test machine: one intra-op thread avoids OpenMP spin-waiting.
    tch::set_num_threads(1);
    let config = ClassifierConfig {
        num_classes,
        head: HeadConfig::paper(),
        fast_path: FastPath::FP32,
    };
    Classifier::new(&config, CPU, seed).unwrap()
}

fn backbone_vars(clf: &Classifier) -> BTreeMap<String, Tensor> {
    clf.named_variables()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("head."))
        .collect()
}

/// torchvision 0.26 `resnet18().state_dict()` names → (shape, dtype), from the committed fixture.
fn torchvision_state_dict() -> BTreeMap<String, (Vec<i64>, String)> {
    let text = include_str!("fixtures/model_resnet18_state_dict.json");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["tensors"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, t)| {
            let shape = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_i64().unwrap());
            (
                k.clone(),
                (shape.collect(), t["dtype"].as_str().unwrap().to_string()),
            )
        })
        .collect()
}

#[test]
fn backbone_names_and_shapes_are_torchvision_resnet18_without_fc() {
    let clf = classifier(3, 0);
    let ours: BTreeMap<String, Vec<i64>> = backbone_vars(&clf)
        .into_iter()
        .map(|(k, t)| (k, t.size()))
        .collect();
    let theirs: BTreeMap<String, Vec<i64>> = torchvision_state_dict()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("fc.") && !k.ends_with(".num_batches_tracked"))
        .map(|(k, (shape, _))| (k, shape))
        .collect();
    assert_eq!(ours, theirs);
    assert_eq!(ours.len(), 100);
    assert_eq!(ours["layer2.0.downsample.0.weight"], vec![128, 64, 1, 1]);
    assert!(!ours.contains_key("layer1.0.downsample.0.weight"));
}

#[test]
fn parameter_count_is_11_176_512_by_hand() {
    // conv k×k c_in→c_out: c_out·c_in·k²; BatchNorm(c): 2c trainable.
    let conv = |ci: usize, co: usize, k: usize| co * ci * k * k;
    let bn = |c: usize| 2 * c;
    let block = |ci: usize, co: usize| {
        let down = if ci != co {
            conv(ci, co, 1) + bn(co)
        } else {
            0
        };
        conv(ci, co, 3) + bn(co) + conv(co, co, 3) + bn(co) + down
    };
    let stage = |ci: usize, co: usize| block(ci, co) + block(co, co);
    let by_hand = conv(3, 64, 7)
        + bn(64)
        + stage(64, 64)
        + stage(64, 128)
        + stage(128, 256)
        + stage(256, 512);
    assert_eq!(by_hand, 11_176_512);
    assert_eq!(RESNET18_PARAMS, by_hand);
    let clf = classifier(2, 0);
    let trainable: usize = backbone_vars(&clf)
        .values()
        .filter(|t| t.requires_grad())
        .map(|t| t.numel())
        .sum();
    assert_eq!(trainable, by_hand);
    // Running statistics are state, not parameters.
    assert!(!clf.named_parameters().contains_key("bn1.running_mean"));
}

#[test]
fn head_names_and_every_output_shape_for_2_3_4_classes() {
    for k in [2i64, 3, 4] {
        let clf = classifier(k, 1);
        let vars = clf.named_variables();
        assert_eq!(vars["head.hidden.0.linear.weight"].size(), vec![512, 512]);
        assert!(!vars.contains_key("head.hidden.0.linear.bias"));
        assert_eq!(vars["head.hidden.0.bn.running_var"].size(), vec![512]);
        assert_eq!(vars["head.embed.weight"].size(), vec![128, 512]);
        assert_eq!(vars["head.out.weight"].size(), vec![k, 128]);
        assert_eq!(vars["head.out.bias"].size(), vec![k]);
        let x = Tensor::randn([3, 3, 64, 48], (Kind::Float, CPU));
        let out = clf.forward_t(&x, false).unwrap();
        assert_eq!(out.maps.layer2.size(), vec![3, 128, 8, 6]);
        assert_eq!(out.maps.layer3.size(), vec![3, 256, 4, 3]);
        assert_eq!(out.maps.layer4.size(), vec![3, 512, 2, 2]);
        assert_eq!(out.maps.pooled.size(), vec![3, 512]);
        assert_eq!(out.embedding.size(), vec![3, 128]);
        assert_eq!(out.logits.size(), vec![3, k]);
        assert_eq!(out.logits.kind(), Kind::Float);
        assert_eq!(clf.features(&x).unwrap().size(), vec![3, 512]);
    }
}

#[test]
fn droc_head_and_bad_configs() {
    let config = ClassifierConfig {
        num_classes: 3,
        head: HeadConfig::droc(),
        fast_path: FastPath::FP32,
    };
    let clf = Classifier::new(&config, CPU, 0).unwrap();
    assert!(clf
        .named_variables()
        .contains_key("head.hidden.7.bn.weight"));
    let mut bad = config.clone();
    bad.num_classes = 1;
    assert!(matches!(
        Classifier::new(&bad, CPU, 0),
        Err(Error::InvalidParam { .. })
    ));
    let mut bad = config;
    bad.head.hidden = vec![512, 0];
    assert!(matches!(
        Classifier::new(&bad, CPU, 0),
        Err(Error::InvalidParam { .. })
    ));
    let clf = classifier(2, 0);
    let wrong = Tensor::zeros([2, 1, 32, 32], (Kind::Float, CPU));
    let err = clf.forward_t(&wrong, true).unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert_eq!(err.kind(), cutpaste::ErrorKind::Data);
}

#[test]
fn same_seed_same_weights_and_eval_mode_leaves_running_stats_alone() {
    let (a, b, c) = (classifier(2, 7), classifier(2, 7), classifier(2, 8));
    let (va, vb, vc) = (
        a.named_variables(),
        b.named_variables(),
        c.named_variables(),
    );
    assert!(va.iter().all(|(k, t)| t.equal(&vb[k])));
    assert!(!va["layer3.1.conv2.weight"].equal(&vc["layer3.1.conv2.weight"]));
    // torchvision init: Kaiming-normal fan-out, std = sqrt(2 / (64·3·3)) for layer1 convs.
    let std = va["layer1.0.conv1.weight"].std(true).double_value(&[]);
    assert!((std - (2.0f64 / 576.0).sqrt()).abs() < 0.002, "{std}");

    let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, CPU));
    let rm = va["bn1.running_mean"].copy();
    let e1 = a.forward_t(&x, false).unwrap().logits;
    let e2 = a.forward_t(&x, false).unwrap().logits;
    assert!(e1.equal(&e2) && va["bn1.running_mean"].equal(&rm));
    let _ = a.forward_t(&x, true).unwrap();
    assert!(
        !va["bn1.running_mean"].equal(&rm),
        "train mode must update running statistics"
    );
}

#[test]
fn channels_last_and_bf16_compute_the_same_function() {
    let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, CPU));
    let reference = classifier(2, 3).forward_t(&x, false).unwrap().logits;
    for (precision, tol) in [(Precision::Fp32, 1e-4), (Precision::Bf16, 0.1)] {
        let config = ClassifierConfig {
            num_classes: 2,
            head: HeadConfig::paper(),
            fast_path: FastPath {
                precision,
                channels_last: true,
            },
        };
        let clf = Classifier::new(&config, CPU, 3).unwrap();
        let w = &clf.named_variables()["layer1.0.conv1.weight"];
        assert_eq!(w.stride()[1], 1, "conv weights must be channels-last");
        let out = clf.forward_t(&x, false).unwrap();
        assert_eq!(out.logits.kind(), Kind::Float);
        let diff = (&out.logits - &reference).abs().max().double_value(&[]);
        let scale = reference.abs().max().double_value(&[]);
        assert!(
            diff <= tol * scale.max(1.0),
            "{precision:?}: {diff} vs scale {scale}"
        );
        if precision == Precision::Bf16 {
            assert_eq!(out.maps.layer4.kind(), Kind::BFloat16);
        }
    }
}

/// Writes a file shaped exactly like torchvision's `resnet18().state_dict()` (with `fc.*` and
/// int64 `num_batches_tracked`), values from `src` + 0.5, then applies `edit`.
fn torchvision_file(
    dir: &std::path::Path,
    src: &Classifier,
    edit: impl FnOnce(&mut Vec<(String, Tensor)>),
) -> std::path::PathBuf {
    let ours = backbone_vars(src);
    let mut tensors: Vec<(String, Tensor)> = torchvision_state_dict()
        .into_iter()
        .map(|(name, (shape, dtype))| {
            let t = match ours.get(&name) {
                Some(v) => (v.detach() + 0.5).contiguous(),
                None if dtype == "torch.int64" => Tensor::from(7i64).reshape(&shape[..]),
                None => Tensor::randn(&shape[..], (Kind::Float, CPU)),
            };
            (name, t)
        })
        .collect();
    edit(&mut tensors);
    let path = dir.join("resnet18.safetensors");
    Tensor::write_safetensors(&tensors, &path).unwrap();
    path
}

#[test]
fn pretrained_backbone_loads_torchvision_names_and_leaves_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let src = classifier(2, 11);
    let path = torchvision_file(dir.path(), &src, |_| {});
    let mut dst = classifier(2, 12);
    let head_before = dst.named_variables()["head.out.weight"].copy();
    dst.load_backbone(&path).unwrap();
    let (s, d) = (backbone_vars(&src), backbone_vars(&dst));
    for (name, t) in &s {
        assert!(
            (t + 0.5).allclose(&d[name], 0.0, 0.0, false),
            "{name} not loaded"
        );
    }
    assert!(dst.named_variables()["head.out.weight"].equal(&head_before));
    // Into a channels-last, bf16 classifier too (layout kept).
    let mut config = ClassifierConfig::new(3, CPU);
    config.fast_path = FastPath {
        precision: Precision::Bf16,
        channels_last: true,
    };
    let mut cl = Classifier::new(&config, CPU, 0).unwrap();
    cl.load_backbone(&path).unwrap();
    let w = &cl.named_variables()["conv1.weight"];
    assert_eq!(w.stride()[1], 1, "layout kept channels-last");
    assert!(w.allclose(&(&s["conv1.weight"] + 0.5), 0.0, 0.0, false));
}

fn load_err(edit: impl FnOnce(&mut Vec<(String, Tensor)>)) -> (Error, bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = torchvision_file(dir.path(), &classifier(2, 1), edit);
    let mut dst = classifier(2, 2);
    let before = dst.named_variables()["conv1.weight"].copy();
    let err = dst.load_backbone(&path).unwrap_err();
    let unchanged = dst.named_variables()["conv1.weight"].equal(&before);
    (err, unchanged)
}

#[test]
fn missing_unexpected_and_misshapen_tensors_are_one_typed_error_listing_all() {
    let (err, unchanged) = load_err(|t| {
        t.retain(|(k, _)| k != "layer3.1.bn2.running_var");
        t.push((
            "layer5.0.conv1.weight".into(),
            Tensor::zeros([1], (Kind::Float, CPU)),
        ));
        for (k, v) in t.iter_mut() {
            if k == "conv1.weight" {
                *v = Tensor::zeros([64, 3, 3, 3], (Kind::Float, CPU));
            }
        }
    });
    assert!(unchanged, "a failed load must not change any weight");
    let msg = err.to_string();
    match err {
        Error::WeightsMismatch {
            missing,
            unexpected,
            mismatched,
            ..
        } => {
            assert_eq!(missing, vec!["layer3.1.bn2.running_var".to_string()]);
            assert_eq!(unexpected, vec!["layer5.0.conv1.weight".to_string()]);
            assert_eq!(mismatched.len(), 1);
            assert!(mismatched[0].starts_with("conv1.weight: file [64, 3, 3, 3]"));
        }
        other => panic!("expected WeightsMismatch, got {other:?}"),
    }
    assert!(
        msg.contains("layer3.1.bn2.running_var") && msg.contains("torchvision"),
        "{msg}"
    );
}

#[test]
fn truncated_foreign_and_absent_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = torchvision_file(dir.path(), &classifier(2, 1), |_| {});
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let mut clf = classifier(2, 0);
    let err = clf.load_backbone(&cut).unwrap_err();
    assert!(
        matches!(err, Error::Checkpoint { ref path, .. } if *path == cut),
        "{err:?}"
    );
    assert!(err.to_string().contains("truncated"));
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"PNG not weights").unwrap();
    assert!(matches!(
        clf.load_backbone(&junk),
        Err(Error::Checkpoint { .. })
    ));
    let absent = dir.path().join("absent.safetensors");
    assert!(matches!(clf.load_backbone(&absent), Err(Error::Io { .. })));
}

#[test]
fn save_and_load_weights_round_trip_with_atomic_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clf.safetensors");
    let a = Classifier::new(&ClassifierConfig::new(3, CPU), CPU, 4).unwrap();
    a.save_weights(&path).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("clf.safetensors")],
        "no temporary file left"
    );
    let mut b = Classifier::new(&ClassifierConfig::new(3, CPU), CPU, 5).unwrap();
    b.load_weights(&path).unwrap();
    let (va, vb) = (a.named_variables(), b.named_variables());
    assert!(va.iter().all(|(k, t)| t.equal(&vb[k])));
    // A 2-class classifier cannot take 3-class weights.
    let mut c = classifier(2, 0);
    assert!(matches!(
        c.load_weights(&path),
        Err(Error::WeightsMismatch { .. })
    ));
}

/// GPU check, only with `--features cuda` and a visible GPU: the seeded init is device
/// independent and a training-mode forward agrees with the CPU one.
#[cfg(feature = "cuda")]
#[test]
fn cuda_classifier_matches_cpu() {
    let gpu = Device::cuda_if_available();
    if gpu == CPU {
        eprintln!("no CUDA device visible: skipping");
        return;
    }
    let config = ClassifierConfig {
        num_classes: 3,
        head: HeadConfig::paper(),
        fast_path: FastPath::FP32,
    };
    let (a, b) = (classifier(3, 1), Classifier::new(&config, gpu, 1).unwrap());
    let vb = b.named_variables();
    for (k, t) in a.named_variables() {
        assert!(t.equal(&vb[&k].to_device(CPU)), "{k}");
    }
    let x = Tensor::randn([4, 3, 64, 64], (Kind::Float, CPU));
    let (la, lb) = (
        a.forward_t(&x, true).unwrap().logits,
        b.forward_t(&x, true).unwrap().logits,
    );
    let diff = (la - lb.to_device(CPU)).abs().max().double_value(&[]);
    assert!(diff < 1e-3, "{diff}");
}

/// A fixed detector scores alike on every fast path: a Gaussian fitted on the fp32 NCHW features
/// of 64 images scores 16 more (half of them shifted, i.e. anomalous) from the fp32
/// channels-last and the bf16 channels-last forward passes of the same weights. Tolerances (the
/// ones `FastPath` documents): fp32 channels-last within 1e-4 relative per score (measured
/// 1.7e-6); bf16 within 5 % (measured 1.6 %) and the same ranking up to Spearman ρ ≥ 0.9.
#[test]
fn one_detector_scores_alike_on_every_fast_path() {
    use cutpaste::density::Density;
    use ndarray::Array2;
    let train = Tensor::randn([64, 3, 32, 32], (Kind::Float, CPU));
    let test = Tensor::randn([16, 3, 32, 32], (Kind::Float, CPU));
    // the second half of the test images is shifted: clearly anomalous
    let shift = Tensor::cat(
        &[
            Tensor::zeros([8, 3, 32, 32], (Kind::Float, CPU)),
            Tensor::ones([8, 3, 32, 32], (Kind::Float, CPU)),
        ],
        0,
    );
    let test = test + shift;
    let feats = |clf: &Classifier, x: &Tensor| -> Array2<f32> {
        // [N, 512] pooled features
        let f = clf
            .features_with(x, Precision::Fp32)
            .unwrap()
            .to_kind(Kind::Float);
        let n = f.size()[0] as usize;
        let v = Vec::<f32>::try_from(f.flatten(0, -1)).unwrap();
        Array2::from_shape_vec((n, 512), v).unwrap()
    };
    let make = |precision, channels_last| {
        let config = ClassifierConfig {
            num_classes: 3,
            head: HeadConfig::paper(),
            fast_path: FastPath {
                precision,
                channels_last,
            },
        };
        Classifier::new(&config, CPU, 3).unwrap()
    };
    let reference = make(Precision::Fp32, false);
    let density = Density::gaussian()
        .fit(feats(&reference, &train).view())
        .unwrap();
    let base = density.score(feats(&reference, &test).view()).unwrap();
    let ranks = |v: &[f32]| -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let mut r = vec![0.0; v.len()];
        for (rank, &i) in idx.iter().enumerate() {
            r[i] = rank as f64;
        }
        r
    };
    let spearman = |a: &[f32], b: &[f32]| {
        let (ra, rb) = (ranks(a), ranks(b));
        let n = a.len() as f64;
        let d2: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - y).powi(2)).sum();
        1.0 - 6.0 * d2 / (n * (n * n - 1.0))
    };
    for (precision, tol) in [(Precision::Fp32, 1e-4f32), (Precision::Bf16, 0.05)] {
        let clf = make(precision, true);
        // bf16 forward passes: features_with(.., Bf16) is what a bf16 CPU path scores with
        let x = clf
            .features_with(&test, precision)
            .unwrap()
            .to_kind(Kind::Float);
        let v = Vec::<f32>::try_from(x.flatten(0, -1)).unwrap();
        let f = Array2::from_shape_vec((16, 512), v).unwrap();
        let other = density.score(f.view()).unwrap();
        let worst = base
            .iter()
            .zip(&other)
            .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
            .fold(0.0f32, f32::max);
        let rho = spearman(base.as_slice().unwrap(), other.as_slice().unwrap());
        eprintln!("{precision:?} channels-last: largest relative difference {worst:.2e}, Spearman ρ {rho:.3}");
        assert!(worst <= tol, "{precision:?}: {worst}");
        assert!(rho >= 0.9, "{precision:?}: ρ {rho}");
    }
}
