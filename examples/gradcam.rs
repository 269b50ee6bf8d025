//! GradCAM localization on the embedded synthetic dataset (exact masks): pixel AUROC of
//! `Detector::gradcam`, overlays of the defect images, and GradCAM vs scoring latency at 256².
//!
//! ```text
//! cargo run --example gradcam                                  # out/gradcam, 150 steps, 64 px
//! cargo run --example gradcam -- out/gradcam 300 96 256 2      # out, steps, side, timing side (0: skip), threads
//! cargo run --example gradcam -- out/bottle 200 128 0 2 ../shared/data/mvtec/bottle  # real data
//! ```
//! Writes `<out>/overlay_<i>.png` (GradCAM in Turbo, ground-truth outline in white) and prints
//! one JSON line; measured with the first command on a 2-core CPU shared with other jobs
//! (load ≈ 9, so absolute times are very noisy; compare the ratios), fp32, 2 torch threads:
//! ```text
//! {"data":"synthetic_part","side":64,"steps":150,"image_auroc":0.9325,"gradcam_pixel_auroc":0.7363,"timing_side":256,"score_ms_per_image":561.2,"gradcam_ms_per_image":486.0,"score_batch8_ms_per_image":221.9,"gradcam_batch8_ms_per_image":257.3,"gaussian_setup_ms":31.3,"threads":2}
//! ```
//! The third command (bottle at 128 px, 200 steps of 8 source images, timing skipped; the paper
//! reports 88.3 mean pixel AUROC for GradCAM over the 15 MVTec categories, §4.2):
//! ```text
//! {"data":"../shared/data/mvtec/bottle","side":128,"steps":200,"image_auroc":0.9746,"gradcam_pixel_auroc":0.8398,"threads":2}
//! ```
//! At 64 px `layer4` is a 2×2 grid, so the map is very coarse; `gaussian_setup_ms` is the
//! per-call cost of setting up the differentiable score (once per `gradcam_batch` call; the line
//! above was measured when it still factorised Σ, it now copies the fitted Cholesky factor).
use cutpaste::data::synthetic::{SyntheticKind, SyntheticSpec};
use cutpaste::heatmap::{AnomalyMap, OverlayOptions, TorchGaussian};
use cutpaste::metrics::{pixel_auroc, roc_auc};
use cutpaste::model::Precision;
use cutpaste::prelude::*;
use image::RgbImage;
use ndarray::Array2;
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

type Data = (Vec<RgbImage>, Vec<RgbImage>, Vec<Array2<bool>>);

/// Train images, test images and their masks (`true` = defect) of the synthetic part:
/// 64 train, 20 good and 20 defect test images.
fn synthetic_data(side: u32) -> Data {
    let spec = SyntheticSpec::new(SyntheticKind::Part).side(side).seed(0);
    let train = (0..64).map(|i| spec.train_image(i)).collect();
    let mut images: Vec<RgbImage> = (0..20).map(|i| spec.test_good_image(i)).collect();
    let mut masks = vec![Array2::from_elem((side as usize, side as usize), false); 20];
    for i in 0..20 {
        let d = spec.defect_sample(i);
        masks.push(to_bool(&d.mask));
        images.push(d.image);
    }
    (train, images, masks)
}

/// The same from an MVTec-layout category folder, resized to `side`.
fn mvtec_data(dir: &str, side: u32) -> cutpaste::Result<Data> {
    let ds = Dataset::mvtec(dir)?;
    let mut masks = Vec::new();
    for s in &ds.test {
        let m = s.load_mask(side)?.ok_or_else(|| Error::MissingMask {
            image: s.path.clone(),
            expected: "ground_truth/<type>/<stem>_mask.png".into(),
        })?;
        masks.push(to_bool(&m));
    }
    Ok((ds.load_train(side)?, ds.load_test(side)?, masks))
}

fn to_bool(mask: &image::GrayImage) -> Array2<bool> {
    let (w, h) = mask.dimensions();
    Array2::from_shape_fn((h as usize, w as usize), |(y, x)| {
        mask.get_pixel(x as u32, y as u32).0[0] > 127
    })
}

fn main() -> cutpaste::Result<()> {
    let out: String = arg(1, "out/gradcam".to_string());
    let steps: usize = arg(2, 150);
    let side: u32 = arg(3, 64);
    let timing_side: u32 = arg(4, 256);
    let threads: i32 = arg(5, 2);
    tch::set_num_threads(threads);
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;

    // Localization quality: train, then GradCAM on every test image.
    let category: Option<String> = std::env::args().nth(6);
    let (train, images, masks) = match category.as_deref() {
        Some(dir) if !std::path::Path::new(dir).is_dir() => {
            println!("{dir} not found: nothing to do (give an MVTec-layout category folder)");
            return Ok(());
        }
        Some(dir) => mvtec_data(dir, side)?,
        None => synthetic_data(side),
    };
    let det = params(side, steps).fit_images_with(train, |_| Control::Continue)?;
    let labels: Vec<bool> = masks.iter().map(|m| m.iter().any(|&b| b)).collect();
    let image_auroc = roc_auc(&det.score_batch(&images)?, &labels)?;
    let maps = det.gradcam_batch(&images)?;
    let views: Vec<_> = maps.iter().map(AnomalyMap::view).collect();
    let mask_views: Vec<_> = masks.iter().map(|m| m.view()).collect();
    let gradcam_pixel_auroc = pixel_auroc(&views, &mask_views)?;
    for (i, (map, img)) in maps.iter().zip(&images).enumerate() {
        if !labels[i] {
            continue;
        }
        // outline the ground truth: a map that is 1 inside the mask
        let truth = AnomalyMap::new(masks[i].mapv(|b| b as u8 as f32))?;
        let shown = map.overlay(img, &OverlayOptions::default())?;
        let outlined =
            truth.overlay(&shown, &OverlayOptions::default().alpha(0.0).threshold(0.5))?;
        cutpaste::data::image_io::save_atomic(&outlined, format!("{out}/overlay_{i:02}.png"))?;
    }

    let timing = if timing_side > 0 {
        latency(timing_side)?
    } else {
        String::new()
    };
    println!(
        "{{\"data\":\"{}\",\"side\":{side},\"steps\":{steps},\"image_auroc\":{image_auroc:.4},\
         \"gradcam_pixel_auroc\":{gradcam_pixel_auroc:.4}{timing},\"threads\":{threads}}}",
        category.as_deref().unwrap_or("synthetic_part")
    );
    Ok(())
}

/// Latency of `score` and `gradcam` at `side`² (weights do not matter: 1 training step), as
/// JSON fields with a leading comma.
fn latency(side: u32) -> cutpaste::Result<String> {
    let spec = SyntheticSpec::new(SyntheticKind::Part).side(side).seed(1);
    let train: Vec<RgbImage> = (0..16).map(|i| spec.train_image(i)).collect();
    let det = params(side, 1).fit_images_with(train, |_| Control::Continue)?;
    let probes: Vec<RgbImage> = (0..8).map(|i| spec.defect_sample(i).image).collect();
    let probe = &probes[0];
    let score_ms = median_ms(9, || det.score(probe).map(|_| ()))?;
    let gradcam_ms = median_ms(9, || det.gradcam(probe).map(|_| ()))?;
    let n = probes.len() as f64;
    let score_batch_ms = median_ms(5, || det.score_batch(&probes).map(|_| ()))? / n;
    let gradcam_batch_ms = median_ms(5, || det.gradcam_batch(&probes).map(|_| ()))? / n;
    let cutpaste::density::FittedDensity::Gaussian(g) = det.density() else {
        unreachable!("the default density is Gaussian")
    };
    let setup_ms = median_ms(9, || TorchGaussian::new(g, Device::Cpu).map(|_| ()))?;
    Ok(format!(
        ",\"timing_side\":{side},\"score_ms_per_image\":{score_ms:.1},\
         \"gradcam_ms_per_image\":{gradcam_ms:.1},\"score_batch8_ms_per_image\":{score_batch_ms:.1},\
         \"gradcam_batch8_ms_per_image\":{gradcam_batch_ms:.1},\"gaussian_setup_ms\":{setup_ms:.1}"
    ))
}
