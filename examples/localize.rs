//! Patch-level localization on one MVTec-layout category (e.g. bottle): trains the image model
//! and the patch model once, then for each requested feature mode refits the patch Gaussians
//! and prints **one JSON line**: pixel AUROC, AUPRO (30 % FPR), image AUROC of the map's max,
//! median milliseconds per image for `Detector::localize` (256² input), peak RSS.
//!
//! ```text
//! cargo run --example localize -- ../shared/data/mvtec/bottle --max-train 24 --max-test 20 \
//!     --pca-images 4 --timing 5 --loc-steps 100 --loc-batch 16 --steps 2 --batch 4 --modes sub4,sub2
//! {"aupro":0.7479,"category":"bottle","density":"PerLocation","fit_seconds":70.6,"image_auroc_map":0.9467,
//!  "image_steps":2,"loc_steps":100,"localizer_mb":100.26,"mode":"sub4","ms_per_image_median":194.5,
//!  "ms_per_image_min":175.4,"n_test":20,"n_train":24,"patch":32,"peak_rss_mb":1004.3,
//!  "pixel_auroc":0.9459,"refit_seconds":0.0,"stride":4,"threads":2,"timed_images":5}
//! {"aupro":0.7812,...,"mode":"sub2","ms_per_image_median":557.8,...,"pixel_auroc":0.9513,...}
//! {"summary":{"sub2":{"ms":557.8,"pixel_auroc":0.9513},"sub4":{"ms":194.5,"pixel_auroc":0.9459}}}
//! ```
//! (one line per mode, each on one line; wrapped and shortened here; the last line sums them
//! up, with each mode's `speedup_vs_exact` and `ms_ratio_to_exact` when `exact` is a mode.)
//!
//! With `--checkpoint FILE` (e.g. a detector from `cutpaste train`, whose patch model was trained
//! on crops at full resolution), nothing is trained: every mode is refitted on that model's patch
//! network, so the rows compare feature modes on one model. `dense` is
//! [`FeatureMode::Dense`] with the parameters of `LocalizerParams::dense()`:
//!
//! ```text
//! cargo run --example localize -- ../shared/data/mvtec/bottle --checkpoint out/bench/default/mvtec_bottle-s0/model.safetensors \
//!     --modes dense,sub4,fast1 --timing 20
//! ```
//!
//! Flags: `--patch N` (32), `--stride N` (4), `--crop N` (64), `--modes LIST` (exact,fast;
//! `exact`, `fastK` = K shifted whole-image passes per axis with `fast` = 2, `subF` = exact on an
//! F× coarser grid, interpolated, `dense`), `--density per-location|shared|auto`, `--loc-steps N` (patch-model
//! steps, 600), `--loc-batch N` (crops per step, 32), `--steps N` (image model, 50), `--batch N`
//! (image model, 8), `--seed N` (0), `--threads N` (libtorch threads, 2), `--max-test N` (all;
//! evenly spaced), `--max-train N` (all), `--pca-images N` (16), `--timing N` (images timed per
//! mode, 10). Progress goes to stderr.
use cutpaste::localize::{FeatureMode, LocalizerParams, PatchDensity};
use cutpaste::metrics::{aupro, pixel_auroc, roc_auc};
use cutpaste::prelude::*;
use ndarray::Array2;
use std::time::Instant;

#[path = "../src/bin/cutpaste/malloc_conf.rs"]
mod malloc_conf;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

struct Args {
    root: String,
    patch: u32,
    stride: u32,
    crop: u32,
    modes: Vec<String>,
    density: PatchDensity,
    loc_steps: usize,
    loc_batch: usize,
    steps: usize,
    batch: usize,
    seed: u64,
    threads: i32,
    max_test: usize,
    max_train: usize,
    pca_images: usize,
    timing: usize,
    checkpoint: Option<String>,
}

fn parse() -> std::result::Result<Args, String> {
    let mut a = Args {
        root: String::new(),
        patch: 32,
        stride: 4,
        crop: 64,
        modes: vec!["exact".into(), "fast".into()],
        density: PatchDensity::PerLocation,
        loc_steps: 600,
        loc_batch: 32,
        steps: 50,
        batch: 8,
        seed: 0,
        threads: 2,
        max_test: usize::MAX,
        max_train: usize::MAX,
        pca_images: 16,
        timing: 10,
        checkpoint: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if !k.starts_with("--") {
            a.root = k;
            continue;
        }
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let num = |v: &str| v.parse::<usize>().map_err(|e| format!("{k}: {e}"));
        match k.as_str() {
            "--patch" => a.patch = num(&v)? as u32,
            "--stride" => a.stride = num(&v)? as u32,
            "--crop" => a.crop = num(&v)? as u32,
            "--modes" => a.modes = v.split(',').map(String::from).collect(),
            "--density" => {
                a.density = match v.as_str() {
                    "shared" => PatchDensity::Shared,
                    "auto" => PatchDensity::Auto,
                    _ => PatchDensity::PerLocation,
                }
            }
            "--loc-steps" => a.loc_steps = num(&v)?,
            "--loc-batch" => a.loc_batch = num(&v)?,
            "--steps" => a.steps = num(&v)?,
            "--batch" => a.batch = num(&v)?,
            "--seed" => a.seed = num(&v)? as u64,
            "--threads" => a.threads = num(&v)? as i32,
            "--max-test" => a.max_test = num(&v)?,
            "--max-train" => a.max_train = num(&v)?,
            "--pca-images" => a.pca_images = num(&v)?,
            "--timing" => a.timing = num(&v)?,
            "--checkpoint" => a.checkpoint = Some(v),
            _ => return Err(format!("unknown flag {k}")),
        }
    }
    if a.root.is_empty() {
        return Err("usage: localize <category folder> [flags]".into());
    }
    Ok(a)
}

fn mode_of(name: &str) -> std::result::Result<FeatureMode, String> {
    match name {
        "exact" => Ok(FeatureMode::Exact),
        "dense" => Ok(FeatureMode::Dense),
        "fast" => Ok(FeatureMode::fast()),
        s if s.starts_with("sub") => s[3..]
            .parse()
            .map(|factor| FeatureMode::Subsampled { factor })
            .map_err(|e| format!("mode {s}: {e}")),
        s if s.starts_with("fast") => s[4..]
            .parse()
            .map(|shifts| FeatureMode::Fast { shifts })
            .map_err(|e| format!("mode {s}: {e}")),
        s => Err(format!(
            "unknown mode {s} (exact, fast, fastK, subF, dense)"
        )),
    }
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Progress on stderr (stdout carries only the JSON lines).
fn progress(e: &FitEvent, t0: &Instant) {
    let at = t0.elapsed().as_secs_f64();
    match e {
        FitEvent::Train(p) | FitEvent::LocalizerTrain(p)
            if p.step % 50 == 0 || p.step == p.steps =>
        {
            let what = if matches!(e, FitEvent::Train(_)) {
                "image"
            } else {
                "patch"
            };
            eprintln!(
                "[{at:.0}s] {what} model step {}/{} loss {:.3}",
                p.step, p.steps, p.loss
            );
        }
        FitEvent::LocalizerFeatures { done, total } if done % 20 == 0 || done == total => {
            eprintln!("[{at:.0}s] patch features {done}/{total}");
        }
        _ => {}
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let a = parse()?;
    tch::set_num_threads(a.threads);
    let mut ds = Dataset::mvtec(&a.root)?;
    ds.train.truncate(a.max_train);
    if a.max_test < ds.test.len() {
        // evenly spaced, so every defect type and the good images stay represented
        let n = ds.test.len();
        ds.test = (0..a.max_test)
            .map(|i| ds.test[i * n / a.max_test].clone())
            .collect();
    }
    let side = 256;
    let lp = LocalizerParams::paper()
        .patch_size(a.patch)
        .stride(a.stride)
        .crop_size(a.crop)
        .density(a.density)
        .steps(a.loc_steps)
        .pca_images(a.pca_images)
        .batch_images(a.loc_batch)
        .mode(mode_of(&a.modes[0])?);
    let params_for = |name: &str| -> std::result::Result<LocalizerParams, String> {
        let mode = mode_of(name)?;
        Ok(if mode == FeatureMode::Dense {
            LocalizerParams::dense()
                .density(a.density)
                .pca_images(a.pca_images)
        } else {
            lp.clone().mode(mode).resolution(side)
        })
    };
    let t0 = Instant::now();
    let loaded = match &a.checkpoint {
        Some(path) => Some(Detector::load(path, Device::Cpu)?),
        None => None,
    };
    let from_checkpoint = loaded.is_some();
    let mut det = match loaded {
        Some(d) => d,
        None => Detector::params()
            .training(TrainParams::paper().steps(a.steps))
            .batch_images(a.batch)
            .device(Device::Cpu)
            .seed(a.seed)
            .localizer(lp.clone())
            .fit_with(&ds, |e| {
                progress(e, &t0);
                Control::Continue
            })?,
    };
    let fit_seconds = t0.elapsed().as_secs_f64();
    let images = ds.load_test(side)?;
    let labels: Vec<bool> = ds.test.iter().map(|s| s.is_anomalous()).collect();
    let mut masks = Vec::new();
    for s in &ds.test {
        let m = s.load_mask(side)?.ok_or("a defect image has no mask")?;
        masks.push(Array2::from_shape_fn(
            (side as usize, side as usize),
            |(y, x)| m.get_pixel(x as u32, y as u32).0[0] > 127,
        ));
    }
    let originals: Vec<_> = ds
        .test
        .iter()
        .take(a.timing)
        .map(|s| cutpaste::data::load_rgb(&s.path))
        .collect::<Result<_>>()?;
    let mut summary: Vec<(String, f64, f64)> = Vec::new(); // (mode, ms median, pixel AUROC)
    for (i, name) in a.modes.iter().enumerate() {
        let t1 = Instant::now();
        if i > 0 || from_checkpoint {
            det.refit_localizer(params_for(name)?, &ds)?;
            eprintln!("[{:.0}s] refit {name}", t0.elapsed().as_secs_f64());
        }
        let refit_seconds = t1.elapsed().as_secs_f64();
        let loc = det.localizer().ok_or("no localizer")?;
        let maps = images
            .iter()
            .map(|im| loc.input_map(im))
            .collect::<Result<Vec<_>>>()?;
        let mv: Vec<_> = maps.iter().map(|m| m.view()).collect();
        let kv: Vec<_> = masks.iter().map(|m| m.view()).collect();
        let maxes: Vec<f32> = maps
            .iter()
            .map(|m| m.fold(f32::NEG_INFINITY, |a, &b| a.max(b)))
            .collect();
        let mut ms: Vec<f64> = Vec::new();
        for im in &originals {
            let t = Instant::now();
            let map = det.localize(im)?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(map);
        }
        ms.sort_by(f64::total_cmp);
        let line = serde_json::json!({
            "category": ds.name,
            "patch": a.patch,
            "stride": a.stride,
            "mode": name,
            "density": format!("{:?}", loc.params().get_density()),
            "pca_dim": loc.params().get_pca_dim(),
            "pixel_auroc": pixel_auroc(&mv, &kv)?,
            "aupro": aupro(&mv, &kv, 0.3)?,
            "image_auroc_map": roc_auc(&maxes, &labels)?,
            "ms_per_image_median": ms.get(ms.len() / 2).copied().unwrap_or(f64::NAN),
            "ms_per_image_min": ms.first().copied().unwrap_or(f64::NAN),
            "timed_images": ms.len(),
            "n_train": ds.train.len(),
            "n_test": images.len(),
            "loc_steps": a.loc_steps,
            "image_steps": a.steps,
            "threads": a.threads,
            "fit_seconds": fit_seconds,
            "refit_seconds": refit_seconds,
            "localizer_mb": loc.memory_bytes() as f64 / 1e6,
            "peak_rss_mb": peak_rss_mb(),
        });
        println!("{line}");
        summary.push((
            name.clone(),
            line["ms_per_image_median"].as_f64().unwrap_or(f64::NAN),
            line["pixel_auroc"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    println!("{}", summary_line(&summary));
    Ok(())
}

/// The closing line: per mode, median ms/image, its ratio to the exact mode's (when `exact`
/// ran) and pixel AUROC, e.g. `{"summary":{"dense":{"ms":31.0,"pixel_auroc":0.97,"speedup_vs_exact":95.2},…}}`.
fn summary_line(rows: &[(String, f64, f64)]) -> serde_json::Value {
    let exact = rows.iter().find(|r| r.0 == "exact").map(|r| r.1);
    let modes: serde_json::Map<String, serde_json::Value> = rows
        .iter()
        .map(|(mode, ms, auroc)| {
            let mut v = serde_json::json!({ "ms": ms, "pixel_auroc": auroc });
            if let Some(e) = exact {
                v["speedup_vs_exact"] = serde_json::json!(e / ms);
                v["ms_ratio_to_exact"] = serde_json::json!(ms / e);
            }
            (mode.clone(), v)
        })
        .collect();
    serde_json::json!({ "summary": modes })
}
