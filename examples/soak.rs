//! Soak run: scores thousands of image files in one process and prints the resident memory (RSS)
//! at the start, middle and end; then scores the same images from 2 threads and from 1 thread
//! and compares the scores.
//!
//! ```text
//! cargo run --release --example soak -- [IMAGES (5000)] [SIDE (64)] [DETECTOR.safetensors]
//! ```
//! Without a checkpoint it trains a small detector on the synthetic dataset (30 steps) first.
//! The run is judged: RSS at the end within 10 % of RSS after warm-up, and identical scores from
//! the threads; a failed check exits non-zero. `Detector` is `Send` but not `Sync` (tch's
//! `Tensor` is a raw pointer to a C++ tensor that tch does not declare `Sync`), so threads cannot
//! share one `&Detector`; the supported ways are one copy per thread (`Detector::try_clone`, or
//! `Detector::load` in each thread) or one `Mutex<Detector>`. Output on a shared 2-core CPU
//! (other jobs running):
//! ```text
//! detector: 64² input; pool of 100 image files in out/soak
//! RSS before scoring      215.9 MiB
//! RSS after 500 images    236.5 MiB (warm-up)
//! RSS after 2500 images   236.6 MiB
//! RSS after 5000 images   236.7 MiB
//! 5000 images in 41.3 s (8.3 ms/image); RSS end vs warm-up +0.1 % (limit 10 %)
//! 1 thread, 2 threads (one detector copy each), 2 threads (one Mutex<Detector>): 192 scores, identical
//! ```
use cutpaste::data::synthetic::{SyntheticKind, SyntheticSpec};
use cutpaste::prelude::*;
use image::RgbImage;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

#[path = "../src/bin/cutpaste/malloc_conf.rs"]
mod malloc_conf;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// Resident set size of this process in MiB (0 where `/proc` is unavailable).
fn rss_mib() -> f64 {
    let kib: f64 = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0.0);
    kib / 1024.0
}

/// The checkpoint at `path`, or a small detector trained on the synthetic dataset under `root`.
fn detector(path: Option<PathBuf>, side: u32, root: &Path) -> cutpaste::Result<Detector> {
    if let Some(p) = path {
        return Detector::load(p, Device::Cpu);
    }
    let dir = SyntheticSpec::new(SyntheticKind::Part)
        .side(side)
        .counts(32, 50, 50)
        .seed(0)
        .write(root)?;
    Detector::params()
        .image_size(side)
        .training(TrainParams::paper().steps(30))
        .batch_images(8)
        .device(Device::Cpu)
        .seed(0)
        .fit(&Dataset::mvtec(dir)?)
}

/// Scores `images` in batches of [`cutpaste::detector::SCORE_BATCH`], batch i on thread
/// i mod n, where thread k owns `workers[k]` (a detector copy, or a reference to a shared
/// `Mutex<Detector>`) and calls `score` with it.
fn score_spread<D: Send>(
    images: &[RgbImage],
    workers: Vec<D>,
    score: impl Fn(&D, &[RgbImage]) -> cutpaste::Result<Vec<f32>> + Sync,
) -> cutpaste::Result<Vec<f32>> {
    let batches: Vec<&[RgbImage]> = images.chunks(cutpaste::detector::SCORE_BATCH).collect();
    let n = workers.len();
    let mut out: Vec<Option<Vec<f32>>> = vec![None; batches.len()];
    std::thread::scope(|s| -> cutpaste::Result<()> {
        let handles: Vec<_> = workers
            .into_iter()
            .enumerate()
            .map(|(k, worker)| {
                let (batches, score) = (&batches, &score);
                s.spawn(move || -> cutpaste::Result<Vec<(usize, Vec<f32>)>> {
                    (k..batches.len())
                        .step_by(n)
                        .map(|i| Ok((i, score(&worker, batches[i])?)))
                        .collect()
                })
            })
            .collect();
        for h in handles {
            for (i, s) in h.join().expect("scoring thread panicked")? {
                out[i] = Some(s);
            }
        }
        Ok(())
    })?;
    Ok(out.into_iter().flatten().flatten().collect())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total: usize = arg(1, 5000);
    let side: u32 = arg(2, 64);
    let ckpt: Option<PathBuf> = std::env::args().nth(3).map(PathBuf::from);
    let root = PathBuf::from("out/soak");
    let det = detector(ckpt, side, &root)?;
    let pool: Vec<PathBuf> = std::fs::read_dir(root.join("synthetic_part/test"))?
        .flat_map(|d| std::fs::read_dir(d.map(|d| d.path()).unwrap_or_default()))
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    if pool.is_empty() {
        return Err("no images under out/soak/synthetic_part/test".into());
    }
    let size = det.params_used().input_size();
    println!(
        "detector: {size}² input; pool of {} image files in {}",
        pool.len(),
        root.display()
    );
    println!("RSS before scoring    {:8.1} MiB", rss_mib());
    let (warm_at, mid_at) = (total / 10, total / 2);
    let (mut warm, mut done) = (0.0, 0usize);
    let t0 = Instant::now();
    while done < total {
        let n = cutpaste::detector::SCORE_BATCH.min(total - done);
        let paths: Vec<PathBuf> = (done..done + n)
            .map(|i| pool[i % pool.len()].clone())
            .collect();
        for r in det.score_files(&paths, |_| {})? {
            r?;
        }
        let before = done;
        done += n;
        for (at, label) in [(warm_at, " (warm-up)"), (mid_at, ""), (total, "")] {
            if before < at && done >= at {
                let rss = rss_mib();
                println!("RSS after {at:5} images {rss:8.1} MiB{label}");
                if at == warm_at {
                    warm = rss;
                }
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let growth = rss_mib() / warm - 1.0;
    println!(
        "{total} images in {secs:.1} s ({:.1} ms/image); RSS end vs warm-up {:+.1} % (limit 10 %)",
        1e3 * secs / total as f64,
        100.0 * growth
    );

    // 1 thread vs 2 threads: the same batches, so the same arithmetic.
    let images = pool
        .iter()
        .cycle()
        .take(192)
        .map(cutpaste::data::load_rgb)
        .collect::<cutpaste::Result<Vec<_>>>()?;
    let one = images
        .chunks(cutpaste::detector::SCORE_BATCH)
        .map(|b| det.score_batch(b))
        .collect::<cutpaste::Result<Vec<_>>>()?
        .concat();
    let copies = vec![det.try_clone()?, det.try_clone()?];
    let two = score_spread(&images, copies, |d, b| d.score_batch(b))?;
    let shared = Mutex::new(det);
    let locked = score_spread(&images, vec![&shared, &shared], |d, b| {
        d.lock().expect("no poisoned lock").score_batch(b)
    })?;
    let same = one == two && one == locked;
    println!(
        "1 thread, 2 threads (one detector copy each), 2 threads (one Mutex<Detector>): {} \
         scores, {}",
        one.len(),
        if same { "identical" } else { "DIFFERENT" }
    );
    if !same || growth.abs() > 0.10 {
        return Err("soak check failed".into());
    }
    Ok(())
}
