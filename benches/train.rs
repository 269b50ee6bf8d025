//! End-to-end training throughput and bf16-vs-fp32 loss curves (issue 4's benchmark).
//!
//! ```text
//! cargo bench --bench train                        # release build; or, reusing the dev build:
//! cargo bench --profile dev --bench train
//! CUTPASTE_BENCH_MODE=curve CUTPASTE_BENCH_SIZES=64 CUTPASTE_BENCH_STEPS=200 \
//!     cargo bench --profile dev --bench train
//! ```
//!
//! `throughput` (default) prints one JSON line per configuration, each measured in its own
//! process (so `peak_rss_mib` is that configuration's): for every size, ours in fp32 and fp32 +
//! channels-last (`"auto": true` marks what [`FastPath::auto`] picks on this machine), then the
//! PyTorch reference `benches/reference/train_torch.py` (Python from `.venv-ref`, set up by
//! `bash benches/reference/setup.sh`) in fp32 and fp32 + channels-last, and finally one `ratio`
//! line: our default and our best against the reference's best, with both peak RSS. Batches are the 3-way shape, 32 source images × 3 views = 96, of
//! the toy cut-paste task ([`cutpaste::model::ToySource`], mirrored in the reference) on
//! `../shared/data/mvtec/bottle/train/good` resized once (synthetic images when absent).
//! Throughput = views / wall time of a step, data feeding included; median over the timed steps
//! after the warm-up. Sample line:
//!
//! ```text
//! {"impl":"cutpaste","size":128,"precision":"Fp32","channels_last":true,"batch":96,"threads":2,"warmup":2,"steps":5,"images_per_sec_median":41.2,"step_seconds_median":2.33,"peak_rss_mib":1210.4,"data":"bottle","losses":[1.13,…]}
//! ```
//!
//! `curve` trains fp32 and bf16 + channels-last from the same seed for `STEPS` steps and prints
//! both loss curves and a comparison line (mean/max absolute difference of 10-step means).
//!
//! Environment: `CUTPASTE_BENCH_SIZES` (default `256,128`), `CUTPASTE_BENCH_STEPS` (timed steps,
//! default 5), `CUTPASTE_BENCH_WARMUP` (default 2), `CUTPASTE_BENCH_CONFIGS` (default
//! `fp32,fp32cl,ref-fp32,ref-fp32cl`; also `bf16cl` and `ref-bf16cl`, ~3.6× slower on CPUs
//! without AMX/AVX512-BF16; every `ref-…` also as `ref-…-jemalloc`, the reference with
//! jemalloc preloaded and our jemalloc options, see `common::preload_jemalloc`),
//! `CUTPASTE_BENCH_THREADS` (intra-op threads,
//! default: all cores), `CUTPASTE_BENCH_PREFETCH` (`workers:depth` of the batch feeding threads,
//! default the library's CPU default), `CUTPASTE_BENCH_DATA` (image folder), `CUTPASTE_BENCH_PYTHON` (default
//! `.venv-ref/bin/python` when present, else `.venv/bin/python`; `none` skips the reference),
//! `CUTPASTE_BENCH_BATCH_IMAGES` (source images per batch on both sides, default 32),
//! `CUTPASTE_BENCH_PAIRED=fused` (ours only: every process alternates the fused training
//! BatchNorm kernels, [`cutpaste::model::set_fused_training`], on and off from step to step
//! (`=gemm`: the batched convolution products, [`cutpaste::model::set_conv_gemm`]),
//! warm-up included, and adds `on_…`/`off_…` medians and `paired_ratio_median`, the median of
//! each on step's speed over the off step after it: an A/B that this machine's
//! minute-to-minute speed swings do not reach).
mod common;
use common::{env_or, env_usize, median, peak_rss_mib, threads};

#[path = "../src/bin/cutpaste/malloc_conf.rs"]
mod malloc_conf;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use cutpaste::model::{
    train, Classifier, ClassifierConfig, Control, FastPath, HeadConfig, Precision, Prefetch,
    ToySource, TrainParams,
};
use std::process::Command;
use std::time::Duration;

/// Source images per batch (× 3 views); `CUTPASTE_BENCH_BATCH_IMAGES`, default 32 (paper).
fn batch_images() -> usize {
    env_usize("CUTPASTE_BENCH_BATCH_IMAGES", 32)
}
const DEFAULT_DATA: &str = "../shared/data/mvtec/bottle/train/good";

/// Source images resized to `size` once, and what they are.
fn images(size: u32) -> (Vec<image::RgbImage>, &'static str) {
    let dir = std::path::PathBuf::from(env_or("CUTPASTE_BENCH_DATA", DEFAULT_DATA));
    let imgs = cutpaste::data::FolderDataset::new(&dir)
        .open()
        .and_then(|ds| ds.load_train(size))
        .unwrap_or_default();
    if imgs.is_empty() {
        eprintln!(
            "bench: no images in {} — using synthetic ones",
            dir.display()
        );
        (ToySource::synthetic_images(64, size, 0), "synthetic")
    } else {
        (imgs, "bottle")
    }
}

/// `CUTPASTE_BENCH_PREFETCH=workers:depth`, else the library's default for the CPU.
fn prefetch() -> Option<Prefetch> {
    let v = std::env::var("CUTPASTE_BENCH_PREFETCH").ok()?;
    let (w, d) = v.split_once(':')?;
    Some(Prefetch {
        workers: w.parse().ok()?,
        depth: d.parse().ok()?,
    })
}

/// One configuration, in this process: trains `warmup + steps` steps and prints one JSON line.
fn child(size: u32, fast_path: FastPath, warmup: usize, steps: usize) {
    tch::set_num_threads(threads() as i32);
    let (imgs, data) = images(size);
    let mut source = ToySource::new(imgs, batch_images(), 0)
        .expect("images")
        .three_way();
    let config = ClassifierConfig {
        num_classes: 3,
        head: HeadConfig::paper(),
        fast_path,
    };
    let mut clf = Classifier::new(&config, tch::Device::Cpu, 0).expect("classifier");
    // The paper's schedule (65,536 steps): the first steps run at lr ≈ 0.03.
    let mut params = TrainParams::paper().seed(0);
    if let Some(p) = prefetch() {
        params = params.prefetch(p);
    }
    let total = warmup + steps;
    // odd steps with the switch on, even steps with it off
    let switch: Option<fn(bool)> = match std::env::var("CUTPASTE_BENCH_PAIRED").as_deref() {
        Ok("fused") => Some(cutpaste::model::set_fused_training),
        Ok("gemm") => Some(cutpaste::model::set_conv_gemm),
        _ => None,
    };
    let paired = switch.is_some();
    if let Some(set) = switch {
        set(true);
    }
    let mut times: Vec<Duration> = vec![];
    let mut losses: Vec<f64> = vec![];
    let result = train(&mut clf, &mut source, &params, |p| {
        if let Some(set) = switch {
            set(p.step % 2 == 0);
        }
        times.push(p.step_time);
        losses.push(p.loss);
        eprintln!(
            "  step {} loss {:.4} {:.2}s",
            p.step,
            p.loss,
            p.step_time.as_secs_f64()
        );
        if p.step >= total {
            Control::Stop
        } else {
            Control::Continue
        }
    });
    if let Err(e) = &result {
        panic!("training failed: {e}");
    }
    let batch = (batch_images() * 3) as f64;
    let timed: Vec<f64> = times.iter().skip(warmup).map(|d| d.as_secs_f64()).collect();
    let ips = median(timed.iter().map(|s| batch / s).collect());
    let mut line = serde_json::json!({
        "impl": "cutpaste", "size": size, "precision": format!("{:?}", fast_path.precision),
        "channels_last": fast_path.channels_last,
        "auto": fast_path == FastPath::auto(tch::Device::Cpu),
        "prefetch": format!("{:?}", prefetch().unwrap_or(Prefetch::auto(tch::Device::Cpu))),
        "batch": batch as usize, "threads": threads(),
        "warmup": warmup, "steps": timed.len(), "images_per_sec_median": ips,
        "step_seconds_median": median(timed), "peak_rss_mib": peak_rss_mib(), "data": data,
        "losses": losses,
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    });
    if paired {
        add_paired(&mut line, &times, warmup, batch);
    }
    println!("{line}");
}

/// The paired A/B fields: step k (1-based) ran with the fused kernels when k is odd.
fn add_paired(line: &mut serde_json::Value, times: &[Duration], warmup: usize, batch: f64) {
    let speed = |k: usize| batch / times[k - 1].as_secs_f64();
    let timed = warmup + 1..=times.len();
    let on: Vec<f64> = timed.clone().filter(|k| k % 2 == 1).map(speed).collect();
    let off: Vec<f64> = timed.clone().filter(|k| k % 2 == 0).map(speed).collect();
    let ratios: Vec<f64> = timed
        .filter(|k| k % 2 == 1 && *k < times.len())
        .map(|k| speed(k) / speed(k + 1))
        .collect();
    line["paired"] = std::env::var("CUTPASTE_BENCH_PAIRED")
        .unwrap_or_default()
        .into();
    line["on_images_per_sec_median"] = median(on).into();
    line["off_images_per_sec_median"] = median(off).into();
    line["paired_ratio_median"] = median(ratios).into();
}

/// Runs this executable as a child for one configuration and forwards its JSON line.
fn spawn(size: u32, fast: FastPath, warmup: usize, steps: usize) -> Option<serde_json::Value> {
    let exe = std::env::current_exe().ok()?;
    let prec = format!("{:?}", fast.precision);
    let out = Command::new(exe)
        .args([
            "--child",
            &size.to_string(),
            &prec,
            &fast.channels_last.to_string(),
        ])
        .args([warmup.to_string(), steps.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{'))?;
    println!("{line}");
    serde_json::from_str(line).ok()
}

/// The PyTorch reference for one configuration (one JSON line), if Python with torchvision is
/// there.
fn reference(
    size: u32,
    (bf16, channels_last, jemalloc): (bool, bool, bool),
    warmup: usize,
    steps: usize,
) -> Option<serde_json::Value> {
    let python = env_or("CUTPASTE_BENCH_PYTHON", default_python());
    if python == "none" {
        return None;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/reference/train_torch.py"
    );
    let mut cmd = Command::new(&python);
    cmd.arg(script)
        .args(["--size", &size.to_string(), "--warmup", &warmup.to_string()])
        .args([
            "--steps",
            &steps.to_string(),
            "--threads",
            &threads().to_string(),
        ])
        .args(["--data", &env_or("CUTPASTE_BENCH_DATA", DEFAULT_DATA)])
        .args(["--batch-images", &batch_images().to_string()]);
    if bf16 {
        cmd.arg("--bf16");
    }
    if channels_last {
        cmd.arg("--channels-last");
    }
    if !common::preload_jemalloc(&mut cmd, jemalloc) {
        return None;
    }
    match cmd.stderr(std::process::Stdio::inherit()).output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text.lines().rev().find(|l| l.starts_with('{'))?;
            let line = common::with_allocator(serde_json::from_str(line).ok()?, jemalloc);
            println!("{line}");
            Some(line)
        }
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

/// The reference's Python: `.venv-ref` (the full torch wheel with torchvision, see
/// `benches/reference/setup.sh`) when present, else `.venv`.
fn default_python() -> &'static str {
    if std::path::Path::new(".venv-ref/bin/python").exists() {
        ".venv-ref/bin/python"
    } else {
        ".venv/bin/python"
    }
}

fn parse_child(args: &[String]) -> Option<(u32, FastPath, usize, usize)> {
    let precision = match args.get(3)?.as_str() {
        "Bf16" => Precision::Bf16,
        _ => Precision::Fp32,
    };
    let fast = FastPath {
        precision,
        channels_last: args.get(4)? == "true",
    };
    Some((
        args.get(2)?.parse().ok()?,
        fast,
        args.get(5)?.parse().ok()?,
        args.get(6)?.parse().ok()?,
    ))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let (size, fast, warmup, steps) = parse_child(&args).expect("child arguments");
        return child(size, fast, warmup, steps);
    }
    let sizes: Vec<u32> = env_or("CUTPASTE_BENCH_SIZES", "256,128")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let (warmup, steps) = (
        env_usize("CUTPASTE_BENCH_WARMUP", 2),
        env_usize("CUTPASTE_BENCH_STEPS", 5),
    );
    let bf16_cl = FastPath {
        precision: Precision::Bf16,
        channels_last: true,
    };
    let fp32_cl = FastPath {
        precision: Precision::Fp32,
        channels_last: true,
    };
    if env_or("CUTPASTE_BENCH_MODE", "throughput") == "curve" {
        return curve(&sizes, steps);
    }
    let configs = env_or("CUTPASTE_BENCH_CONFIGS", "fp32,fp32cl,ref-fp32,ref-fp32cl");
    let want = |c: &str| configs.split(',').any(|x| x.trim() == c);
    for &size in &sizes {
        let mut ours = vec![];
        for (name, fast) in [
            ("fp32", FastPath::FP32),
            ("fp32cl", fp32_cl),
            ("bf16cl", bf16_cl),
        ] {
            if want(name) {
                ours.extend(spawn(size, fast, warmup, steps));
            }
        }
        let mut theirs = vec![];
        for (name, bf16, cl) in [
            ("ref-fp32", false, false),
            ("ref-fp32cl", false, true),
            ("ref-bf16cl", true, true),
        ] {
            for jemalloc in [false, true] {
                let config = if jemalloc {
                    format!("{name}-jemalloc")
                } else {
                    name.to_string()
                };
                if want(&config) {
                    theirs.extend(reference(size, (bf16, cl, jemalloc), warmup, steps));
                }
            }
        }
        print_ratio(size, &ours, &theirs);
    }
}

/// Images/s of a bench JSON line.
fn ips(v: &serde_json::Value) -> f64 {
    v["images_per_sec_median"].as_f64().unwrap_or(f64::NAN)
}

/// The fastest line of `lines` (by images/s).
fn fastest(lines: &[serde_json::Value]) -> Option<&serde_json::Value> {
    lines.iter().max_by(|a, b| ips(a).total_cmp(&ips(b)))
}

/// One JSON line: our default (`FastPath::auto`) and our best against the reference's best.
fn print_ratio(size: u32, ours: &[serde_json::Value], theirs: &[serde_json::Value]) {
    let (Some(best), Some(reference)) = (fastest(ours), fastest(theirs)) else {
        return;
    };
    let auto = ours.iter().find(|v| v["auto"] == true);
    let ratio = |v: &serde_json::Value| ips(v) / ips(reference);
    let line = serde_json::json!({
        "ratio": "cutpaste / pytorch, training images/s", "size": size,
        "auto_vs_reference_best": auto.map(ratio),
        "best_vs_reference_best": ratio(best),
        "ours_best": {"precision": best["precision"], "channels_last": best["channels_last"],
                      "images_per_sec_median": ips(best), "peak_rss_mib": best["peak_rss_mib"]},
        "reference_best": {"precision": reference["precision"],
                           "channels_last": reference["channels_last"],
                           "allocator": reference["allocator"],
                           "images_per_sec_median": ips(reference),
                           "peak_rss_mib": reference["peak_rss_mib"],
                           "worker_peak_rss_mib": reference["worker_peak_rss_mib"]},
    });
    println!("{line}");
}

/// bf16 + channels-last vs fp32 from the same seed: loss curves and their distance.
fn curve(sizes: &[u32], steps: usize) {
    let bf16_cl = FastPath {
        precision: Precision::Bf16,
        channels_last: true,
    };
    for &size in sizes {
        let a = spawn(size, FastPath::FP32, 0, steps);
        let b = spawn(size, bf16_cl, 0, steps);
        let (Some(a), Some(b)) = (a, b) else { continue };
        let curve = |v: &serde_json::Value| -> Vec<f64> {
            let l: Vec<f64> = v["losses"]
                .as_array()
                .map_or(vec![], |a| a.iter().filter_map(|x| x.as_f64()).collect());
            l.chunks(10)
                .map(|c| c.iter().sum::<f64>() / c.len() as f64)
                .collect()
        };
        let (ca, cb) = (curve(&a), curve(&b));
        let diffs: Vec<f64> = ca.iter().zip(&cb).map(|(x, y)| (x - y).abs()).collect();
        let line = serde_json::json!({
            "compare": "bf16+channels_last vs fp32", "size": size, "steps": steps,
            "fp32_10step_means": ca, "bf16_10step_means": cb,
            "mean_abs_diff": diffs.iter().sum::<f64>() / diffs.len().max(1) as f64,
            "max_abs_diff": diffs.iter().cloned().fold(0.0, f64::max),
        });
        println!("{line}");
    }
}
