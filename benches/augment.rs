//! Speed of the augmentations on 256×256 images (issue 3).
//!
//! Run: `cargo bench --bench augment` (criterion; medians land in
//! `target/criterion/augment/*/new/estimates.json`). The Python/Pillow reference doing the same
//! operations is `benches/reference/augment_pillow.py`; its header gives the command.
//!
//! Input: `../shared/data/mvtec/bottle/train/good/000.png` resized to 256×256 (bilinear) when the
//! data folder exists, otherwise a synthetic colour pattern. Cases (one image per iteration, the
//! seed changes every iteration so patch sizes average out):
//! - `cutpaste`: [`cutpaste::augment::cutpaste`] alone (cut, jitter the patch, paste);
//! - `scar`: [`cutpaste::augment::scar`] alone;
//! - `three_way_views`: `Augmentation::three_way().views(..)`: pre-augmentation of the whole image
//!   (colour jitter + translation) and the normal, CutPaste and Scar views;
//! - `batch_three_way_2_threads`: `batch_views` over 64 images in a 2-thread rayon pool
//!   (throughput in images per second).
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use cutpaste::augment::{
    adjust_brightness, adjust_hue, adjust_saturation, batch_views, color_jitter, cutpaste, scar,
    Augmentation, ColorJitter, CutPasteParams, ScarParams,
};
use image::{imageops::FilterType, RgbImage};

#[path = "../src/bin/cutpaste/malloc_conf.rs"]
mod malloc_conf;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The bottle image at 256², or a synthetic pattern when the data set is absent.
fn input() -> RgbImage {
    let path = Path::new("../shared/data/mvtec/bottle/train/good/000.png");
    match image::open(path) {
        Ok(img) => image::imageops::resize(&img.to_rgb8(), 256, 256, FilterType::Triangle),
        Err(_) => {
            eprintln!(
                "{} not found: using a synthetic 256x256 pattern",
                path.display()
            );
            RgbImage::from_fn(256, 256, |x, y| {
                image::Rgb([x as u8, y as u8, ((x * 7 + y * 13) % 256) as u8])
            })
        }
    }
}

fn bench(c: &mut Criterion) {
    let img = input();
    let mut group = c.benchmark_group("augment");
    group
        .sample_size(60)
        .measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1));
    let cp = CutPasteParams::paper();
    let sc = ScarParams::paper();
    let three = Augmentation::three_way();
    let mut seed = 0u64;
    group.bench_function("cutpaste", |b| {
        b.iter(|| {
            seed += 1;
            black_box(cutpaste(black_box(&img), &cp, seed).ok())
        })
    });
    group.bench_function("scar", |b| {
        b.iter(|| {
            seed += 1;
            black_box(scar(black_box(&img), &sc, seed).ok())
        })
    });
    group.bench_function("three_way_views", |b| {
        b.iter(|| {
            seed += 1;
            black_box(three.views(black_box(&img), seed).ok())
        })
    });
    let batch: Vec<RgbImage> = vec![img.clone(); 64];
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().ok();
    group.throughput(Throughput::Elements(batch.len() as u64));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(6));
    group.bench_function("batch_three_way_2_threads", |b| {
        b.iter(|| {
            seed += 1;
            let run = || batch_views(&three, black_box(&batch), seed).ok();
            black_box(match &pool {
                Some(pool) => pool.install(run),
                None => run(),
            })
        })
    });
    group.finish();
}

/// The colour-jitter operations alone on the whole 256² image (where the time of a view goes).
fn jitter_ops(c: &mut Criterion) {
    let img = input();
    let mut group = c.benchmark_group("jitter_256");
    group
        .sample_size(40)
        .measurement_time(Duration::from_secs(2));
    let jitter = ColorJitter::paper();
    let mut seed = 0u64;
    group.bench_function("color_jitter_0.1", |b| {
        b.iter(|| {
            seed += 1;
            black_box(color_jitter(black_box(&img), &jitter, seed).ok())
        })
    });
    group.bench_function("hue", |b| {
        b.iter_batched_ref(
            || img.clone(),
            |im| adjust_hue(im, 0.05),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("saturation", |b| {
        b.iter_batched_ref(
            || img.clone(),
            |im| adjust_saturation(im, 1.05),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("brightness", |b| {
        b.iter_batched_ref(
            || img.clone(),
            |im| adjust_brightness(im, 1.05),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench, jitter_ops);
criterion_main!(benches);
