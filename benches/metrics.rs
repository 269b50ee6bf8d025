//! Metric speed (issue 5): pixel AUROC and AUPRO on 83 maps of 256×256 (MVTec AD bottle's test
//! set size, ≈ 5.4 M pixels), image AUROC / F1-max on 10k scores. Run:
//!
//!     cargo bench --bench metrics
use criterion::{criterion_group, criterion_main, Criterion};
use cutpaste::metrics::{aupro, f1_max, pixel_auroc, roc_auc};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

/// 83 smooth-ish maps with 0–3 elliptic defects each (≈ 20 % of the images defect-free).
fn maps_and_masks() -> (Vec<Array2<f32>>, Vec<Array2<bool>>) {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (mut maps, mut masks) = (Vec::new(), Vec::new());
    for _ in 0..83 {
        let mut mask = Array2::from_elem((256, 256), false);
        let blobs: Vec<(f32, f32, f32, f32)> = (0..rng.random_range(0..4))
            .map(|_| {
                let (cy, cx) = (rng.random_range(20.0..236.0), rng.random_range(20.0..236.0));
                (
                    cy,
                    cx,
                    rng.random_range(3.0..25.0),
                    rng.random_range(3.0..25.0),
                )
            })
            .collect();
        for ((y, x), m) in mask.indexed_iter_mut() {
            *m = blobs.iter().any(|&(cy, cx, ry, rx)| {
                ((y as f32 - cy) / ry).powi(2) + ((x as f32 - cx) / rx).powi(2) <= 1.0
            });
        }
        let map = Array2::from_shape_fn((256, 256), |(y, x)| {
            let base = ((y as f32 * 0.05).sin() + (x as f32 * 0.03).cos()) * 0.2;
            base + rng.random::<f32>() + if mask[[y, x]] { 0.7 } else { 0.0 }
        });
        maps.push(map);
        masks.push(mask);
    }
    (maps, masks)
}

fn bench_metrics(c: &mut Criterion) {
    let (maps, masks) = maps_and_masks();
    let mv: Vec<_> = maps.iter().map(|m| m.view()).collect();
    let kv: Vec<_> = masks.iter().map(|m| m.view()).collect();
    let mut g = c.benchmark_group("metrics");
    g.sample_size(10);
    g.bench_function("pixel_auroc_83x256x256", |b| {
        b.iter(|| pixel_auroc(black_box(&mv), black_box(&kv)).unwrap())
    });
    g.bench_function("aupro_0.3_83x256x256", |b| {
        b.iter(|| aupro(black_box(&mv), black_box(&kv), 0.3).unwrap())
    });
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let labels: Vec<bool> = (0..10_000).map(|_| rng.random::<f32>() < 0.3).collect();
    let scores: Vec<f32> = labels
        .iter()
        .map(|&l| rng.random::<f32>() + if l { 0.5 } else { 0.0 })
        .collect();
    g.bench_function("roc_auc_10000", |b| {
        b.iter(|| roc_auc(black_box(&scores), black_box(&labels)).unwrap())
    });
    g.bench_function("f1_max_10000", |b| {
        b.iter(|| f1_max(black_box(&scores), black_box(&labels)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench_metrics);
criterion_main!(benches);
