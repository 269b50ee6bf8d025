//! Density-estimator speed (issue 5): Gaussian fit on 1000×512, Gaussian scoring of 10k×512,
//! KDE scoring of 10k against 1k. Run:
//!
//!     cargo bench --bench density
//!     OPENBLAS_CORETYPE=Prescott cargo bench --bench density   # compare OpenBLAS kernels
//!
//! (`.cargo/config.toml` sets `OPENBLAS_CORETYPE=Haswell`; an exported value wins.)
use criterion::{criterion_group, criterion_main, Criterion};
use cutpaste::density::{Covariance, Density, GaussianParams};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

/// ReLU-pooled-CNN-like features: non-negative, 512-d.
fn features(n: usize, d: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_fn((n, d), |_| (rng.random::<f32>() - 0.3).max(0.0))
}

fn bench_density(c: &mut Criterion) {
    let train = features(1000, 512, 1);
    let test = features(10_000, 512, 2);
    let mut g = c.benchmark_group("density");
    g.sample_size(10);
    let lw = Density::gaussian();
    let emp = Density::Gaussian(GaussianParams::default().covariance(Covariance::empirical()));
    g.bench_function("gaussian_lw_fit_1000x512", |b| {
        b.iter(|| lw.fit(black_box(train.view())).unwrap())
    });
    g.bench_function("gaussian_empirical_fit_1000x512", |b| {
        b.iter(|| emp.fit(black_box(train.view())).unwrap())
    });
    let fitted = lw.fit(train.view()).unwrap();
    g.bench_function("gaussian_score_10000x512", |b| {
        b.iter(|| fitted.score(black_box(test.view())).unwrap())
    });
    let kde = Density::kde().fit(train.view()).unwrap();
    g.bench_function("kde_score_10000_vs_1000x512", |b| {
        b.iter(|| kde.score(black_box(test.view())).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench_density);
criterion_main!(benches);
