//! The GPU check of issue 17: trains an MVTec category (bottle) for a fixed number of steps on
//! the best device, measures training and scoring throughput with and without the data
//! pipeline, compares fp32 and bf16 density features of the trained network, and prints one JSON
//! line with the projected time of the paper's 65,536 steps. `--full` runs the paper's protocol
//! instead (65,536 steps for the image model and for the patch localizer) and prints its image
//! and pixel AUROC. `scripts/gpu_check.sh` runs both on a GPU machine that has only this binary
//! and a PyTorch 2.11 `lib/` (docs/gpu.md).
//!
//! ```text
//! # build (full torch wheel for CUDA; the binary then needs only PyTorch 2.11's lib/ to run)
//! CUTPASTE_FULL_TORCH=1 bash scripts/setup.sh
//! cargo build --release --features cuda --example gpu_check
//! target/release/examples/gpu_check ../shared/data/mvtec/bottle --steps 200
//! ```
//!
//! Options: `--size PX` (256), `--steps N` (200), `--localizer-steps N` (same as --steps; 0 fits
//! no localizer), `--batch-images N` (32), `--device auto|cpu|cuda|cuda:N` (auto), `--workers N`
//! (prefetch workers; default `Prefetch::auto`), `--warmup N` (20 steps left out of the rates),
//! `--fixed-steps N` (50; training steps on one fixed batch, 0 skips), `--seed S` (0), `--full`,
//! `--augment-only` (only the augmentation throughput on 1 and on `--workers` threads).
//!
//! Prints one JSON line on stdout (progress and notes on stderr). On the shared 2-core CPU of the
//! development machine (no GPU there: a check of the fp32 vs bf16 feature numerics, not a speed
//! result), `gpu_check ../shared/data/mvtec/bottle --size 64 --steps 50 --localizer-steps 0
//! --device cpu --fixed-steps 0` printed (abridged, rounded):
//!
//! ```text
//! {"mode":"measure","device":"Cpu","image_auroc":96.51,"auroc_fp32_features":96.59,"auroc_bf16_features":96.51,
//!  "score_pearson_fp32_bf16":0.99972,"score_spearman_fp32_bf16":0.99929,"feature_rel_l1_bf16_vs_fp32":0.0138,
//!  "train_img_s":3.7,"score_img_s":24.7,"projected_65536_steps_s":1687821,…}
//! ```
#[path = "../src/bin/cutpaste/malloc_conf.rs"]
mod malloc_conf;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use cutpaste::data::images_to_tensor;
use cutpaste::model::{
    resolve_device, train, Batch, BatchSource, Classifier, ClassifierConfig, CudaEnv, Precision,
    Prefetch, Progress,
};
use cutpaste::pipeline::AugmentSource;
use cutpaste::prelude::*;
use ndarray::Array2;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The paper's number of steps, the projection's target.
const PAPER_STEPS: usize = 65_536;

struct Args {
    data: PathBuf,
    size: u32,
    steps: usize,
    localizer_steps: Option<usize>,
    batch_images: usize,
    device: String,
    workers: Option<usize>,
    warmup: usize,
    fixed_steps: usize,
    seed: u64,
    full: bool,
    augment_only: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        data: PathBuf::new(),
        size: 256,
        steps: 200,
        localizer_steps: None,
        batch_images: 32,
        device: "auto".into(),
        workers: None,
        warmup: 20,
        fixed_steps: 50,
        seed: 0,
        full: false,
        augment_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--full" || flag == "--augment-only" {
            a.full |= flag == "--full";
            a.augment_only |= flag == "--augment-only";
            continue;
        }
        if !flag.starts_with("--") {
            a.data = PathBuf::from(flag);
            continue;
        }
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<usize>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--size" => a.size = num(&v)? as u32,
            "--steps" => a.steps = num(&v)?,
            "--localizer-steps" => a.localizer_steps = Some(num(&v)?),
            "--batch-images" => a.batch_images = num(&v)?,
            "--device" => a.device = v,
            "--workers" => a.workers = Some(num(&v)?),
            "--warmup" => a.warmup = num(&v)?,
            "--fixed-steps" => a.fixed_steps = num(&v)?,
            "--seed" => a.seed = num(&v)? as u64,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if a.data.as_os_str().is_empty() {
        return Err("usage: gpu_check <MVTec category folder, e.g. mvtec/bottle> [options]".into());
    }
    if a.full {
        a.steps = PAPER_STEPS;
    }
    Ok(a)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Images per second of a training phase, from the step events after the warm-up.
#[derive(Default)]
struct Rate {
    warm: Option<(usize, Instant)>,
    last: Option<(usize, Instant)>,
    start_ms: Option<u64>,
    end_ms: u64,
}

impl Rate {
    fn step(&mut self, p: &Progress, warmup: usize) {
        let now = Instant::now();
        self.start_ms.get_or_insert_with(unix_ms);
        self.end_ms = unix_ms();
        if p.step == warmup.min(p.steps.saturating_sub(1)).max(1) {
            self.warm = Some((p.step, now));
        }
        self.last = Some((p.step, now));
    }

    /// Views per second between the warm-up step and the last one.
    fn seconds(&self) -> f64 {
        self.start_ms
            .map_or(0.0, |s| self.end_ms.saturating_sub(s) as f64 / 1000.0)
    }

    fn images_per_sec(&self, views_per_step: usize) -> Option<f64> {
        let ((s0, t0), (s1, t1)) = (self.warm?, self.last?);
        let secs = t1.duration_since(t0).as_secs_f64();
        (s1 > s0 && secs > 0.0).then(|| ((s1 - s0) * views_per_step) as f64 / secs)
    }
}

fn params(a: &Args, device: Device, localizer_steps: usize) -> DetectorParams {
    let mut training = TrainParams::paper().steps(a.steps);
    if let Some(w) = a.workers {
        training = training.prefetch(Prefetch {
            workers: w,
            depth: 2,
        });
    }
    let p = Detector::params()
        .image_size(a.size)
        .batch_images(a.batch_images)
        .training(training)
        .device(device)
        .seed(a.seed);
    match localizer_steps {
        0 => p,
        n => p.localizer(LocalizerParams::paper().steps(n)),
    }
}

/// Pooled features of `images` in `precision`, `[n, 512]`.
fn features(
    clf: &Classifier,
    images: &[image::RgbImage],
    precision: Precision,
) -> cutpaste::Result<Array2<f32>> {
    let norm = cutpaste::data::Normalization::IMAGENET;
    let mut rows = Vec::new();
    for chunk in images.chunks(32) {
        let x = images_to_tensor(chunk, &norm, clf.device())?;
        let f = clf
            .features_with(&x, precision)?
            .f_to_device(Device::Cpu)?
            .f_contiguous()?;
        let n = f.numel();
        let mut buf = vec![0f32; n];
        f.f_copy_data(&mut buf, n)?;
        rows.extend(buf);
    }
    let dim = rows.len() / images.len().max(1);
    Array2::from_shape_vec((images.len(), dim), rows)
        .map_err(|e| cutpaste::Error::invalid_param("images", e.to_string()))
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut r = vec![0.0; v.len()];
    for (rank, &i) in idx.iter().enumerate() {
        r[i] = rank as f64;
    }
    r
}

/// Fits the Gaussian on fp32 and on bf16 features of the training images and scores the test
/// images with each: AUROC of both, and how closely the two score lists agree.
fn feature_precision_check(
    det: &Detector,
    train_images: &[image::RgbImage],
    test_images: &[image::RgbImage],
    labels: &[bool],
) -> cutpaste::Result<Map<String, Value>> {
    let clf = det.classifier();
    let mut scores = Vec::new();
    let mut out = Map::new();
    let mut feats = Vec::new();
    for (name, p) in [("fp32", Precision::Fp32), ("bf16", Precision::Bf16)] {
        let t0 = Instant::now();
        let train_f = features(clf, train_images, p)?;
        let test_f = features(clf, test_images, p)?;
        let secs = t0.elapsed().as_secs_f64();
        let density = Density::gaussian().fit(train_f.view())?;
        let s = density.score(test_f.view())?.to_vec();
        let auroc = cutpaste::metrics::roc_auc(&s, labels)?;
        out.insert(format!("auroc_{name}_features"), json!(100.0 * auroc));
        out.insert(format!("features_{name}_s"), json!(secs));
        scores.push(s.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>());
        feats.push(test_f);
    }
    let rel = (&feats[1] - &feats[0]).mapv(f32::abs).sum() / feats[0].mapv(f32::abs).sum();
    out.insert("feature_rel_l1_bf16_vs_fp32".into(), json!(rel));
    out.insert(
        "score_pearson_fp32_bf16".into(),
        json!(pearson(&scores[0], &scores[1])),
    );
    let (r0, r1) = (ranks(&scores[0]), ranks(&scores[1]));
    out.insert("score_spearman_fp32_bf16".into(), json!(pearson(&r0, &r1)));
    Ok(out)
}

/// Training images per second on one fixed, pre-made batch: the network (and the transfer)
/// without augmentation.
fn fixed_batch_rate(a: &Args, device: Device, images: &Arc<Vec<image::RgbImage>>) -> Option<f64> {
    if a.fixed_steps == 0 {
        return None;
    }
    let aug = Augmentation::three_way();
    let mut src = AugmentSource::new(images.clone(), aug, a.batch_images, a.seed).ok()?;
    let batch: Batch = src.batch(0).ok()?;
    let views = batch.images.len();
    let mut clf = Classifier::new(&ClassifierConfig::new(3, device), device, a.seed).ok()?;
    let mut fixed = move |_step: usize| Ok(batch.clone());
    let mut rate = Rate::default();
    let params = TrainParams::paper().steps(a.fixed_steps + a.warmup.min(10));
    let warmup = a.warmup.min(10);
    train(&mut clf, &mut fixed, &params, |p| {
        rate.step(p, warmup);
        Control::Continue
    })
    .ok()?;
    rate.images_per_sec(views)
}

/// Augmented views per second that `workers` threads produce (the CPU's ceiling for feeding the
/// network), over about 3 s. One worker runs on the calling thread (so a rayon pool installed
/// around the call applies to it).
fn augmentation_rate(a: &Args, images: &Arc<Vec<image::RgbImage>>, workers: usize) -> f64 {
    let src = AugmentSource::new(images.clone(), Augmentation::three_way(), a.batch_images, 7)
        .expect("augment source");
    let t0 = Instant::now();
    let run = |k: usize| {
        let mut src = src.clone();
        let (mut n, mut step) = (0, k);
        while t0.elapsed() < Duration::from_secs(3) {
            n += src.batch(step).map_or(0, |b| b.images.len());
            step += workers;
        }
        n
    };
    let views: usize = if workers <= 1 {
        run(0)
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers).map(|k| s.spawn(move || run(k))).collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        })
    };
    views as f64 / t0.elapsed().as_secs_f64()
}

/// Scored test images per second (the whole `score_batch` path, after one warm-up pass).
fn score_rate(det: &Detector, test_images: &[image::RgbImage]) -> cutpaste::Result<f64> {
    det.score_batch(&test_images[..test_images.len().min(32)])?;
    let t0 = Instant::now();
    let mut n = 0;
    while n == 0 || t0.elapsed() < Duration::from_secs(2) {
        det.score_batch(test_images)?;
        n += test_images.len();
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// Fits the detector, timing the image model's and the patch model's training steps.
fn fit_timed(
    a: &Args,
    p: &DetectorParams,
    data: &Dataset,
) -> cutpaste::Result<(Detector, [Rate; 2])> {
    let (mut image_rate, mut patch_rate) = (Rate::default(), Rate::default());
    let det = p.fit_with(data, |e| {
        match e {
            FitEvent::Train(pr) => image_rate.step(pr, a.warmup),
            FitEvent::LocalizerTrain(pr) => patch_rate.step(pr, a.warmup),
            _ => {}
        }
        Control::Continue
    })?;
    Ok((det, [image_rate, patch_rate]))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = parse()?;
    let env = CudaEnv::detect();
    let choice = resolve_device(a.device.parse()?, &env)?;
    if let Some(note) = &choice.note {
        eprintln!("note: {note}");
    }
    let device = choice.device;
    let data = Dataset::mvtec(&a.data)?;
    if a.augment_only {
        return augment_only(&a, &data, device);
    }
    let localizer_steps = a.localizer_steps.unwrap_or(a.steps);
    let p = params(&a, device, localizer_steps);
    let views = a.batch_images * p.augmentation_config().num_classes();
    eprintln!(
        "gpu_check: {} on {device:?} ({env:?}), {}², {} + {localizer_steps} steps of {views} views",
        a.data.display(),
        a.size,
        a.steps
    );
    let t_all = Instant::now();
    let (det, [image_rate, patch_rate]) = fit_timed(&a, &p, &data)?;
    let fit_s = t_all.elapsed().as_secs_f64();
    let t_eval = Instant::now();
    let report = det.evaluate(&data)?;
    let eval_s = t_eval.elapsed().as_secs_f64();
    let base = json!({
        "mode": if a.full { "full" } else { "measure" },
        "device": format!("{device:?}"), "cuda_env": format!("{env:?}"),
        "size": a.size, "steps": a.steps, "localizer_steps": localizer_steps,
        "views_per_step": views,
        "image_auroc": 100.0 * report.image_auroc,
        "pixel_auroc": report.pixel_auroc.map(|v| 100.0 * v),
        "train_img_s": image_rate.images_per_sec(views),
        "fit_s": fit_s, "eval_s": eval_s,
        "train_start_unix_ms": image_rate.start_ms, "train_end_unix_ms": image_rate.end_ms,
    });
    let mut out = match base {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    if a.full {
        out.insert("per_type_auroc".into(), json!(report.per_type_auroc));
    } else {
        // Time that does not scale with the steps: features, densities, evaluation.
        let rest_s = fit_s - image_rate.seconds() - patch_rate.seconds() + eval_s;
        out.insert("fit_and_eval_s_besides_training".into(), json!(rest_s));
        measure(
            &a,
            &det,
            &data,
            device,
            views,
            &mut out,
            [&image_rate, &patch_rate],
        )?;
        if let Some(full) = out.get("projected_full_s").and_then(Value::as_f64) {
            out.insert("projected_full_s".into(), json!(full + rest_s));
        }
    }
    out.insert("total_s".into(), json!(t_all.elapsed().as_secs_f64()));
    println!("{}", Value::Object(out));
    Ok(())
}

/// `--augment-only`: augmented views per second on 1 worker and on the prefetch workers.
fn augment_only(
    a: &Args,
    data: &Dataset,
    device: Device,
) -> Result<(), Box<dyn std::error::Error>> {
    let images = Arc::new(data.load_train(a.size)?);
    let workers = a.workers.unwrap_or_else(|| Prefetch::auto(device).workers);
    // One thread, one core: rayon (a batch's images in parallel) confined to one thread.
    #[cfg(feature = "parallel")]
    let one_core = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()?
        .install(|| augmentation_rate(a, &images, 1));
    #[cfg(not(feature = "parallel"))]
    let one_core = augmentation_rate(a, &images, 1);
    let one = augmentation_rate(a, &images, 1);
    let all = augmentation_rate(a, &images, workers);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let out = json!({"mode": "augment-only", "size": a.size, "cores": cores,
        "augment_img_s_1_core": one_core, "augment_img_s_1_worker": one,
        "prefetch_workers": workers, "augment_img_s": all});
    println!("{out}");
    Ok(())
}

/// The throughput figures, the feature-precision comparison and the projections.
fn measure(
    a: &Args,
    det: &Detector,
    data: &Dataset,
    device: Device,
    views: usize,
    out: &mut Map<String, Value>,
    [image_rate, patch_rate]: [&Rate; 2],
) -> cutpaste::Result<()> {
    let train_img_s = image_rate.images_per_sec(views);
    let patch_img_s = patch_rate.images_per_sec(views);
    out.insert("localizer_train_img_s".into(), json!(patch_img_s));
    let train_images = Arc::new(data.load_train(a.size)?);
    let test_images = data.load_test(a.size)?;
    let labels: Vec<bool> = data.test.iter().map(|s| s.is_anomalous()).collect();
    out.insert("score_img_s".into(), json!(score_rate(det, &test_images)?));
    out.extend(feature_precision_check(
        det,
        &train_images,
        &test_images,
        &labels,
    )?);
    out.insert(
        "train_img_s_fixed_batch".into(),
        json!(fixed_batch_rate(a, device, &train_images)),
    );
    let workers = a.workers.unwrap_or_else(|| Prefetch::auto(device).workers);
    out.insert("prefetch_workers".into(), json!(workers));
    out.insert(
        "augment_img_s".into(),
        json!(augmentation_rate(a, &train_images, workers)),
    );
    let project = |rate: Option<f64>| rate.map(|r| (PAPER_STEPS * views) as f64 / r);
    let (img, loc) = (project(train_img_s), project(patch_img_s));
    out.insert("projected_65536_steps_s".into(), json!(img));
    out.insert("projected_localizer_65536_steps_s".into(), json!(loc));
    out.insert(
        "projected_full_s".into(),
        json!(img.map(|i| i + loc.unwrap_or(0.0))),
    );
    Ok(())
}
