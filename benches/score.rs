//! End-to-end scoring throughput of image files, ours against a PyTorch reference, in one run.
//!
//! ```text
//! cargo bench --bench score                        # release build; or, reusing the dev build:
//! cargo bench --profile dev --bench score
//! CUTPASTE_BENCH_SIZES=64 CUTPASTE_BENCH_REPS=1 \
//!     CUTPASTE_BENCH_SCORE_DIR=../shared/data/mvtec/bottle/test/broken_large \
//!     cargo bench --profile dev --bench score      # a quick smoke run
//! ```
//!
//! For every size S, the parent trains a detector once with a tiny budget (image-level scoring
//! only: no localizer; the default fast path, [`FastPath::auto`]) on
//! `../shared/data/mvtec/bottle/train/good` (synthetic images written to a temporary folder when
//! absent) and saves it to a temporary checkpoint. Then, each in its own process (so
//! `peak_rss_mib`, the VmHWM, is that configuration's), it prints one JSON line for:
//!
//! - `cutpaste`: loads the checkpoint and scores the image files under the score folder
//!   (recursively) with [`Detector::score_files`] (decode, resize, forward, density);
//! - `pytorch`, fp32 NCHW and fp32 channels-last: `benches/reference/score_torch.py` (when the
//!   Python can import torchvision), torchvision resnet18 + the same head, a `DataLoader` with
//!   PIL decode and `Resize`, the same batch (32), a Gaussian (Mahalanobis) score; it measures
//!   DataLoader `num_workers` 0 and 1 and reports the faster.
//!
//! Each side runs a warm-up pass over the first images, then `REPS` timed passes over all of
//! them; throughput = images / wall time of a pass; medians over passes. Lines of the smoke run
//! above (2 cores shared with another job, so the numbers mean little):
//!
//! ```text
//! {"batch":32,"data":"train:folder,score:folder","fast_path":{"channels_last":true,"precision":"Fp32"},"feature_precision":"Fp32","images_per_sec_median":25.4,"impl":"cutpaste","ms_per_image_median":39.4,"n_images":20,"n_scored":20,"peak_rss_mib":263.7,"reps":1,"size":64,"threads":2,"warmup":20,…}
//! {"impl": "pytorch", "size": 64, "threads": 2, "channels_last": false, "batch": 32, "n_images": 20, "warmup": 20, "reps": 1, "workers": 0, "images_per_sec_median": 114.7, "ms_per_image_median": 8.7, "by_workers": {…}, "peak_rss_mib": 1169.7, …}
//! ```
//!
//! and last, per size, a summary line `{"ratio": ours / best reference images/s, …}` where the
//! best reference is the faster of fp32 NCHW and channels-last.
//!
//! Environment: `CUTPASTE_BENCH_SIZES` (default `256,128`), `CUTPASTE_BENCH_REPS` (timed passes,
//! default 3), `CUTPASTE_BENCH_WARMUP` (images of the warm-up pass, default 32: one batch),
//! `CUTPASTE_BENCH_DATA` (training folder), `CUTPASTE_BENCH_SCORE_DIR` (folder scored, default
//! `../shared/data/mvtec/bottle/test`; synthetic images when absent), `CUTPASTE_BENCH_THREADS`
//! (intra-op threads, default: all cores), `CUTPASTE_BENCH_TRAIN_STEPS` (default 2),
//! `CUTPASTE_BENCH_TRAIN_IMAGES` (training images used, default 64; the reference fits its
//! Gaussian on as many), `CUTPASTE_BENCH_CONFIGS` (default `ours,ref,ref-cl`; also
//! `ours-fp32cl` and `ours-bf16cl`, ours trained and scored on that fast path instead of `auto`,
//! `ours-eager`, the `ours` checkpoint scored with the fused inference backbone off
//! (`CUTPASTE_FUSED=0`: the eager forward under autocast), `ours-1stream`, the `ours`
//! checkpoint scored in one stream (`CUTPASTE_SCORE_STREAMS=1`: every batch over all intra-op
//! threads, as before the scoring streams),
//! and `ref-bf16cl`, the reference under bf16 autocast + channels-last; every `ref…` also as
//! `ref…-jemalloc`, with jemalloc preloaded and our jemalloc options, see
//! `common::preload_jemalloc`),
//! `CUTPASTE_BENCH_PYTHON` (default `.venv-ref/bin/python`; `none` skips the reference).
mod common;
use common::{env_or, env_usize, median, peak_rss_mib, threads};

#[path = "../src/bin/cutpaste/malloc_conf.rs"]
mod malloc_conf;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use cutpaste::detector::SCORE_BATCH;
use cutpaste::model::{Control, FastPath, Precision, ToySource, TrainParams};
use cutpaste::Detector;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const DEFAULT_DATA: &str = "../shared/data/mvtec/bottle/train/good";
const DEFAULT_SCORE_DIR: &str = "../shared/data/mvtec/bottle/test";
const DEFAULT_PYTHON: &str = ".venv-ref/bin/python";

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

/// `dir` and every folder below it, sorted depth-first.
fn folders(dir: &Path) -> Vec<PathBuf> {
    let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    subs.sort();
    let mut out = vec![dir.to_path_buf()];
    out.extend(subs.iter().flat_map(|s| folders(s)));
    out
}

/// The image files under `dir`, recursively ([`cutpaste::data::collect_images`] on every
/// folder that holds some).
fn image_files(dir: &Path) -> Vec<PathBuf> {
    folders(dir)
        .into_iter()
        .filter_map(|d| cutpaste::data::collect_images(&[d]).ok())
        .flatten()
        .collect()
}

/// Writes `n` synthetic PNG images of side `size` to `dir`, which it creates.
fn write_synthetic(dir: &Path, n: usize, size: u32, seed: u64) -> BoxResult<()> {
    std::fs::create_dir_all(dir)?;
    for (i, img) in ToySource::synthetic_images(n, size, seed)
        .iter()
        .enumerate()
    {
        img.save(dir.join(format!("{i:03}.png")))?;
    }
    Ok(())
}

/// The folder `var` names (default `default`) when it holds images, else `n` synthetic images
/// written under `tmp/name`; and what it is (`"folder"` or `"synthetic"`).
fn folder_or_synthetic(
    var: &str,
    default: &str,
    tmp: &Path,
    name: &str,
    n: usize,
) -> (PathBuf, &'static str) {
    let dir = PathBuf::from(env_or(var, default));
    if !image_files(&dir).is_empty() {
        return (dir, "folder");
    }
    eprintln!(
        "bench: no images in {} — using synthetic ones",
        dir.display()
    );
    let syn = tmp.join(name);
    write_synthetic(&syn, n, 256, n as u64).expect("synthetic images");
    (syn, "synthetic")
}

/// Trains a detector at `size` with a tiny budget on the images of `train` and saves it to
/// `checkpoint`.
fn train_detector(
    size: u32,
    train: &Path,
    checkpoint: &Path,
    fast_path: Option<FastPath>,
) -> BoxResult<()> {
    let t0 = Instant::now();
    let mut images = cutpaste::data::FolderDataset::new(train)
        .open()?
        .load_train(size)?;
    images.truncate(env_usize("CUTPASTE_BENCH_TRAIN_IMAGES", 64).max(2));
    let steps = env_usize("CUTPASTE_BENCH_TRAIN_STEPS", 2).max(1);
    let mut params = Detector::params();
    if let Some(f) = fast_path {
        params = params.fast_path(f);
    }
    let detector = params
        .image_size(size)
        .device(tch::Device::Cpu)
        .batch_images(8)
        .training(TrainParams::paper().steps(steps))
        .seed(0)
        .fit_images_with(images, |_| Control::Continue)?;
    detector.save(checkpoint)?;
    eprintln!(
        "bench: trained a {size}px detector ({steps} steps) in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One timed pass: scores `files` and returns the seconds it took and how many were scored.
fn timed_pass(detector: &Detector, files: &[PathBuf]) -> (f64, usize) {
    let t = Instant::now();
    let scores = detector.score_files(files, |_| {}).expect("scoring");
    let secs = t.elapsed().as_secs_f64();
    (secs, scores.iter().filter(|s| s.is_ok()).count())
}

/// Ours, in this process: loads `checkpoint`, scores the files under `dir`, prints one JSON line.
fn child(size: u32, checkpoint: &Path, dir: &Path, data: &str) {
    tch::set_num_threads(threads() as i32);
    let detector = Detector::load(checkpoint, tch::Device::Cpu).expect("checkpoint");
    assert!(detector.localizer().is_none(), "image-level scoring only");
    let files = image_files(dir);
    assert!(!files.is_empty(), "no images under {}", dir.display());
    let warmup = env_usize("CUTPASTE_BENCH_WARMUP", SCORE_BATCH).clamp(1, files.len());
    timed_pass(&detector, &files[..warmup]);
    let (mut ips, mut ms, mut scored) = (vec![], vec![], 0);
    for rep in 0..env_usize("CUTPASTE_BENCH_REPS", 3).max(1) {
        let (secs, ok) = timed_pass(&detector, &files);
        scored = ok;
        ips.push(files.len() as f64 / secs);
        ms.push(1e3 * secs / files.len() as f64);
        eprintln!("  pass {} {:.1} img/s", rep + 1, ips[rep]);
    }
    let fast: FastPath = detector.classifier().config().fast_path;
    let line = json!({
        "impl": "cutpaste", "size": size, "threads": threads(),
        "fast_path": {"precision": format!("{:?}", fast.precision), "channels_last": fast.channels_last},
        "feature_precision": format!("{:?}", fast.feature_precision(tch::Device::Cpu)),
        "fused": cutpaste::model::fused_inference(),
        "score_streams": std::env::var("CUTPASTE_SCORE_STREAMS").unwrap_or_else(|_| "auto".into()),
        "batch": SCORE_BATCH, "n_images": files.len(), "n_scored": scored, "warmup": warmup,
        "reps": ips.len(), "images_per_sec_median": median(ips), "ms_per_image_median": median(ms),
        "peak_rss_mib": peak_rss_mib(), "data": data,
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    });
    println!("{line}");
}

/// The last JSON line on a command's stdout with the reference's allocator (`jemalloc` when
/// preloaded), forwarded to ours.
fn json_line(out: &std::process::Output, jemalloc: bool) -> Option<Value> {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{'))?;
    let line = common::with_allocator(serde_json::from_str(line).ok()?, jemalloc);
    println!("{line}");
    Some(line)
}

/// How a child scores the `ours` checkpoint: the fused inference backbone on or off, and the
/// scoring streams (`None`: the library's choice; `Some(1)`: one stream).
#[derive(Clone, Copy)]
struct Variant {
    fused: bool,
    streams: Option<usize>,
}

const DEFAULT_VARIANT: Variant = Variant {
    fused: true,
    streams: None,
};

/// Runs this executable as a child that scores with `checkpoint` as `variant` says; its JSON
/// line.
fn spawn(size: u32, checkpoint: &Path, s: &Setup, variant: Variant) -> Option<Value> {
    let exe = std::env::current_exe().ok()?;
    let mut cmd = Command::new(exe);
    cmd.env("CUTPASTE_FUSED", if variant.fused { "1" } else { "0" });
    match variant.streams {
        Some(n) => cmd.env("CUTPASTE_SCORE_STREAMS", n.to_string()),
        None => cmd.env_remove("CUTPASTE_SCORE_STREAMS"),
    };
    let out = cmd
        .args(["--child", &size.to_string()])
        .args([checkpoint, &s.score])
        .arg(&s.data)
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    json_line(&out, true)
}

/// The Python to run the reference with, if it can import torchvision.
fn python() -> Option<String> {
    let python = env_or("CUTPASTE_BENCH_PYTHON", DEFAULT_PYTHON);
    if python == "none" {
        return None;
    }
    let ok = Command::new(&python)
        .args(["-c", "import torch, torchvision"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("bench: {python} cannot import torchvision; reference skipped");
    }
    ok.then_some(python)
}

/// The PyTorch reference at `size` over the files under `dir` (one JSON line).
fn reference(
    python: &str,
    size: u32,
    (channels_last, bf16, jemalloc): (bool, bool, bool),
    dir: &Path,
    train: &Path,
) -> Option<Value> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/reference/score_torch.py"
    );
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .args([
            "--size",
            &size.to_string(),
            "--threads",
            &threads().to_string(),
        ])
        .args([
            "--reps",
            &env_usize("CUTPASTE_BENCH_REPS", 3).max(1).to_string(),
        ])
        .args([
            "--warmup",
            &env_usize("CUTPASTE_BENCH_WARMUP", SCORE_BATCH).to_string(),
        ])
        .args(["--batch", &SCORE_BATCH.to_string()])
        .args([
            "--fit-images",
            &env_usize("CUTPASTE_BENCH_TRAIN_IMAGES", 64).to_string(),
        ])
        .arg("--dir")
        .arg(dir)
        .arg("--train")
        .arg(train);
    if channels_last {
        cmd.arg("--channels-last");
    }
    if bf16 {
        cmd.arg("--bf16");
    }
    if !common::preload_jemalloc(&mut cmd, jemalloc) {
        return None;
    }
    match cmd.stderr(Stdio::inherit()).output() {
        Ok(out) if out.status.success() => json_line(&out, jemalloc),
        Ok(out) => {
            eprintln!("bench: reference failed ({}); skipped", out.status);
            None
        }
        Err(e) => {
            eprintln!("bench: cannot run {python} ({e}); reference skipped");
            None
        }
    }
}

fn ips(v: &Value) -> f64 {
    v["images_per_sec_median"].as_f64().unwrap_or(f64::NAN)
}

/// The summary line of one size: ours over the faster reference (and our variants' speeds).
fn summary(size: u32, ours: &Ours, refs: &[Value]) {
    let (Some(main), Some(best)) = (
        ours.main.as_ref(),
        refs.iter().max_by(|a, b| ips(a).total_cmp(&ips(b))),
    ) else {
        return;
    };
    let line = json!({
        "ratio": ips(main) / ips(best), "size": size, "n_images": main["n_images"],
        "ours_images_per_sec": ips(main), "ours_fast_path": main["fast_path"],
        "reference_images_per_sec": ips(best), "reference_channels_last": best["channels_last"],
        "reference_precision": best["precision"],
        "reference_workers": best["workers"], "reference_allocator": best["allocator"],
        "threads": threads(),
        "ours_eager_images_per_sec": ours.eager.as_ref().map(ips),
        "ours_one_stream_images_per_sec": ours.one_stream.as_ref().map(ips),
    });
    println!("{line}");
}

/// The JSON lines of `ours` and of its variants `ours-eager` and `ours-1stream`.
#[derive(Default)]
struct Ours {
    main: Option<Value>,
    eager: Option<Value>,
    one_stream: Option<Value>,
}

/// What every size shares: the folders, what they are, the Python for the reference.
struct Setup {
    tmp: tempfile::TempDir,
    train: PathBuf,
    score: PathBuf,
    /// `train:<folder|synthetic>,score:<folder|synthetic>`.
    data: String,
    python: Option<String>,
}

impl Setup {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("temporary folder");
        let (train, t) =
            folder_or_synthetic("CUTPASTE_BENCH_DATA", DEFAULT_DATA, tmp.path(), "train", 32);
        let (score, s) = folder_or_synthetic(
            "CUTPASTE_BENCH_SCORE_DIR",
            DEFAULT_SCORE_DIR,
            tmp.path(),
            "test",
            40,
        );
        let data = format!("train:{t},score:{s}");
        let python = python();
        Self {
            tmp,
            train,
            score,
            data,
            python,
        }
    }
}

fn want(config: &str) -> bool {
    env_or("CUTPASTE_BENCH_CONFIGS", "ours,ref,ref-cl")
        .split(',')
        .any(|x| x.trim() == config)
}

/// Our configurations: `ours` is [`FastPath::auto`], the others force one fast path (the
/// detector is trained and scored on it).
const OURS: [(&str, Option<FastPath>); 3] = [
    ("ours", None),
    (
        "ours-fp32cl",
        Some(FastPath {
            precision: Precision::Fp32,
            channels_last: true,
        }),
    ),
    (
        "ours-bf16cl",
        Some(FastPath {
            precision: Precision::Bf16,
            channels_last: true,
        }),
    ),
];

/// Everything for one size: train, ours, the reference in both layouts, the summary (of
/// `ours`, the default path).
fn bench_size(size: u32, s: &Setup) {
    let mut ours = Ours::default();
    let variants = [
        (
            "ours-eager",
            Variant {
                fused: false,
                ..DEFAULT_VARIANT
            },
        ),
        (
            "ours-1stream",
            Variant {
                streams: Some(1),
                ..DEFAULT_VARIANT
            },
        ),
    ];
    for (name, fast_path) in OURS.into_iter() {
        let variants_too = name == "ours" && variants.iter().any(|(v, _)| want(v));
        if !want(name) && !variants_too {
            continue;
        }
        let checkpoint = s.tmp.path().join(format!("{name}_{size}.safetensors"));
        if let Err(e) = train_detector(size, &s.train, &checkpoint, fast_path) {
            eprintln!("bench: training {name} at {size}px failed: {e}");
            continue;
        }
        if want(name) {
            let line = spawn(size, &checkpoint, s, DEFAULT_VARIANT);
            if name == "ours" {
                ours.main = line;
            }
        }
        if name != "ours" {
            continue;
        }
        for (variant, how) in variants.iter().filter(|(v, _)| want(v)) {
            let line = spawn(size, &checkpoint, s, *how);
            match *variant {
                "ours-eager" => ours.eager = line,
                _ => ours.one_stream = line,
            }
        }
    }
    let mut refs = vec![];
    let configs = [
        ("ref", (false, false)),
        ("ref-cl", (true, false)),
        ("ref-bf16cl", (true, true)),
    ];
    for (name, (cl, bf16)) in configs {
        for jemalloc in [false, true] {
            let config = if jemalloc {
                format!("{name}-jemalloc")
            } else {
                name.to_string()
            };
            if let Some(py) = s.python.as_deref().filter(|_| want(&config)) {
                refs.extend(reference(
                    py,
                    size,
                    (cl, bf16, jemalloc),
                    &s.score,
                    &s.train,
                ));
            }
        }
    }
    summary(size, &ours, &refs);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let size = args.get(2).and_then(|s| s.parse().ok()).expect("size");
        let (checkpoint, dir) = (PathBuf::from(&args[3]), PathBuf::from(&args[4]));
        return child(size, &checkpoint, &dir, &args[5]);
    }
    let sizes: Vec<u32> = env_or("CUTPASTE_BENCH_SIZES", "256,128")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let setup = Setup::new();
    for &size in &sizes {
        bench_size(size, &setup);
    }
}
