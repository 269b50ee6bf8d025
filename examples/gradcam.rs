//! GradCAM localization on the embedded synthetic dataset (exact masks): pixel AUROC of
//! `Detector::gradcam`, overlays of the defect images, and GradCAM vs scoring latency at 256².
//!
//! ```text
//! cargo run --example gradcam                                  # out/gradcam, 150 steps, 64 px
//! cargo run --example gradcam -- out/gradcam 300 96 256 2      # out, steps, side, timing side, threads
//! ```
//! Writes `<out>/overlay_<i>.png` (GradCAM in Turbo, ground-truth outline in white) and prints
//! one JSON line; measured with the first command on a 2-core CPU shared with other jobs
//! (load ≈ 9, so absolute times are very noisy; compare the ratios), fp32, 2 torch threads:
//! ```text
//! {"side":64,"steps":150,"image_auroc":0.9325,"gradcam_pixel_auroc":0.7363,"timing_side":256,"score_ms_per_image":561.2,"gradcam_ms_per_image":486.0,"score_batch8_ms_per_image":221.9,"gradcam_batch8_ms_per_image":257.3,"gaussian_setup_ms":31.3,"threads":2}
//! ```
//! At 64 px `layer4` is a 2×2 grid, so the map is very coarse; `gaussian_setup_ms` is the
//! per-call cost of factorising Σ for the differentiable score (once per `gradcam_batch` call).
use cutpaste::data::synthetic::{SyntheticKind, SyntheticSpec};
use cutpaste::heatmap::{AnomalyMap, OverlayOptions, TorchGaussian};
use cutpaste::metrics::{pixel_auroc, roc_auc};
use cutpaste::model::Precision;
use cutpaste::prelude::*;
use image::RgbImage;
use ndarray::Array2;
use std::time::Instant;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn params(side: u32, steps: usize) -> DetectorParams {
    Detector::params()
        .image_size(side)
        .batch_images(8)
        .training(TrainParams::paper().steps(steps))
        .device(Device::Cpu)
        .fast_path(FastPath {
            precision: Precision::Fp32,
            channels_last: false,
        })
        .seed(0)
}

/// Median of `reps` timings of `f`, in ms, after one warm-up call.
fn median_ms(reps: usize, mut f: impl FnMut() -> cutpaste::Result<()>) -> cutpaste::Result<f64> {
    f()?;
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f().map(|_| t0.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<cutpaste::Result<_>>()?;
    t.sort_by(f64::total_cmp);
    Ok(t[reps / 2])
}

fn main() -> cutpaste::Result<()> {
    let out: String = arg(1, "out/gradcam".to_string());
    let steps: usize = arg(2, 150);
    let side: u32 = arg(3, 64);
    let timing_side: u32 = arg(4, 256);
    let threads: i32 = arg(5, 2);
    tch::set_num_threads(threads);
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;

    // Localization quality: train on the synthetic part, GradCAM on every test image.
    let spec = SyntheticSpec::new(SyntheticKind::Part).side(side).seed(0);
    let train: Vec<RgbImage> = (0..64).map(|i| spec.train_image(i)).collect();
    let det = params(side, steps).fit_images_with(train, |_| Control::Continue)?;
    let mut images: Vec<RgbImage> = (0..20).map(|i| spec.test_good_image(i)).collect();
    let mut masks: Vec<Array2<bool>> =
        vec![Array2::from_elem((side as usize, side as usize), false); 20];
    for i in 0..20 {
        let d = spec.defect_sample(i);
        masks.push(Array2::from_shape_fn(
            (side as usize, side as usize),
            |(y, x)| d.mask.get_pixel(x as u32, y as u32).0[0] > 127,
        ));
        images.push(d.image);
    }
    let labels: Vec<bool> = (0..40).map(|i| i >= 20).collect();
    let image_auroc = roc_auc(&det.score_batch(&images)?, &labels)?;
    let maps = det.gradcam_batch(&images)?;
    let views: Vec<_> = maps.iter().map(AnomalyMap::view).collect();
    let mask_views: Vec<_> = masks.iter().map(|m| m.view()).collect();
    let gradcam_pixel_auroc = pixel_auroc(&views, &mask_views)?;
    for (i, (map, img)) in maps.iter().zip(&images).enumerate().skip(20) {
        // outline the ground truth: a map that is 1 inside the mask
        let truth = AnomalyMap::new(masks[i].mapv(|b| b as u8 as f32))?;
        let shown = map.overlay(img, &OverlayOptions::default())?;
        let outlined =
            truth.overlay(&shown, &OverlayOptions::default().alpha(0.0).threshold(0.5))?;
        cutpaste::data::image_io::save_atomic(&outlined, format!("{out}/overlay_{i:02}.png"))?;
    }

    // Latency at the paper's resolution (weights do not matter: 1 training step).
    let tspec = SyntheticSpec::new(SyntheticKind::Part)
        .side(timing_side)
        .seed(1);
    let train: Vec<RgbImage> = (0..16).map(|i| tspec.train_image(i)).collect();
    let fast = params(timing_side, 1).fit_images_with(train, |_| Control::Continue)?;
    let probes: Vec<RgbImage> = (0..8).map(|i| tspec.defect_sample(i).image).collect();
    let probe = &probes[0];
    let score_ms = median_ms(9, || fast.score(probe).map(|_| ()))?;
    let gradcam_ms = median_ms(9, || fast.gradcam(probe).map(|_| ()))?;
    let n = probes.len() as f64;
    let score_batch_ms = median_ms(5, || fast.score_batch(&probes).map(|_| ()))? / n;
    let gradcam_batch_ms = median_ms(5, || fast.gradcam_batch(&probes).map(|_| ()))? / n;
    let cutpaste::density::FittedDensity::Gaussian(g) = fast.density() else {
        unreachable!("the default density is Gaussian")
    };
    let setup_ms = median_ms(9, || TorchGaussian::new(g, Device::Cpu).map(|_| ()))?;
    println!(
        "{{\"side\":{side},\"steps\":{steps},\"image_auroc\":{image_auroc:.4},\
         \"gradcam_pixel_auroc\":{gradcam_pixel_auroc:.4},\"timing_side\":{timing_side},\
         \"score_ms_per_image\":{score_ms:.1},\"gradcam_ms_per_image\":{gradcam_ms:.1},\
         \"score_batch8_ms_per_image\":{score_batch_ms:.1},\
         \"gradcam_batch8_ms_per_image\":{gradcam_batch_ms:.1},\
         \"gaussian_setup_ms\":{setup_ms:.1},\"threads\":{threads}}}"
    );
    Ok(())
}
