//! Anomaly-map rendering (hand-checked colours and outlines, libtorch as the bilinear oracle).
use cutpaste::heatmap::{AnomalyMap, MapRange, OverlayOptions};
use cutpaste::Error;
use image::{Rgb, RgbImage};
use ndarray::Array2;

/// An 8×6 map, 0 everywhere except 1 at (x 3, y 2).
fn one_hot() -> AnomalyMap {
    let mut v = Array2::zeros((6, 8));
    v[(2, 3)] = 1.0;
    AnomalyMap::new(v).unwrap()
}

fn flat_image(w: u32, h: u32) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb([100, 150, 200]))
}

/// Hand-computed: `round(0.5·(100, 150, 200) + 0.5·255·turbo(t))` with Turbo's polynomial
/// evaluated by hand at t = 0, 1 and 0.5: 255·turbo(0) = (34.609, 23.308, 27.202),
/// 255·turbo(1) = (144.294, 12.849, 0 (clamped from −6.5)), 255·turbo(0.5) = (150.073, 250.375, 79.858).
const COLD: [u8; 3] = [67, 87, 114];
const HOT: [u8; 3] = [122, 81, 100];
const MID: [u8; 3] = [125, 200, 140];

#[test]
fn one_hot_pixel_colours_only_its_pixel() {
    let map = one_hot();
    let out = map
        .overlay(&flat_image(8, 6), &OverlayOptions::default())
        .unwrap();
    for (x, y, p) in out.enumerate_pixels() {
        let want = if (x, y) == (3, 2) { HOT } else { COLD };
        assert_eq!(p.0, want, "pixel ({x}, {y})");
    }
}

#[test]
fn fixed_range_shares_one_scale() {
    // 1 in [0, 2] is the middle of the scale; values outside the range clamp to its ends
    let opts = OverlayOptions::default().fixed_range(0.0, 2.0);
    let out = one_hot().overlay(&flat_image(8, 6), &opts).unwrap();
    assert_eq!(out.get_pixel(3, 2).0, MID);
    assert_eq!(out.get_pixel(0, 0).0, COLD);
    let clamped = OverlayOptions::default().fixed_range(-3.0, -1.0);
    let out = one_hot().overlay(&flat_image(8, 6), &clamped).unwrap();
    assert!(out.pixels().all(|p| p.0 == HOT));
}

#[test]
fn alpha_zero_keeps_the_image_and_alpha_one_is_the_colour_map() {
    let img = RgbImage::from_fn(8, 6, |x, y| Rgb([x as u8 * 30, y as u8 * 40, 7]));
    let map = one_hot();
    let opts = OverlayOptions::default().alpha(0.0);
    assert_eq!(map.overlay(&img, &opts).unwrap(), img);
    let out = map
        .overlay(&img, &OverlayOptions::default().alpha(1.0))
        .unwrap();
    assert_eq!(out.get_pixel(3, 2).0, [144, 13, 0]);
    assert_eq!(out.get_pixel(5, 5).0, [35, 23, 27]);
}

#[test]
fn constant_map_is_all_cold_under_min_max() {
    let map = AnomalyMap::new(Array2::from_elem((6, 8), 4.5)).unwrap();
    let out = map
        .overlay(&flat_image(8, 6), &OverlayOptions::default())
        .unwrap();
    assert!(out.pixels().all(|p| p.0 == COLD));
}

/// A 10×12 (h × w) map with the square rows 3..=7 × columns 4..=8 at 5, else 0.
fn square() -> AnomalyMap {
    AnomalyMap::new(Array2::from_shape_fn((10, 12), |(y, x)| {
        if (3..=7).contains(&y) && (4..=8).contains(&x) {
            5.0
        } else {
            0.0
        }
    }))
    .unwrap()
}

#[test]
fn contour_is_exactly_the_boundary_of_a_square() {
    let map = square();
    let c = map.contour(1.0, 1);
    for ((y, x), &on) in c.indexed_iter() {
        let in_sq = (3..=7).contains(&y) && (4..=8).contains(&x);
        let edge = in_sq && (y == 3 || y == 7 || x == 4 || x == 8);
        assert_eq!(on, edge, "pixel (x {x}, y {y})");
    }
    assert_eq!(c.iter().filter(|&&b| b).count(), 16); // 5×5 square: 25 − 9 inner
                                                      // 2 px: everything but the centre pixel (5, 6)
    let c2 = map.contour(1.0, 2);
    assert_eq!(c2.iter().filter(|&&b| b).count(), 24);
    assert!(!c2[(5, 6)]);
    // threshold above every value: no region, no outline
    assert!(!map.contour(5.0, 1).iter().any(|&b| b));
}

#[test]
fn contour_closes_at_the_image_border() {
    // region = columns 0..=2 of every row: the border pixels in it are outline too
    let map =
        AnomalyMap::new(Array2::from_shape_fn((5, 6), |(_, x)| (x < 3) as u8 as f32)).unwrap();
    let c = map.contour(0.5, 1);
    for ((y, x), &on) in c.indexed_iter() {
        let want = x < 3 && (x == 0 || x == 2 || y == 0 || y == 4);
        assert_eq!(on, want, "pixel (x {x}, y {y})");
    }
}

#[test]
fn overlay_draws_the_contour_in_its_colour_and_nothing_else() {
    let map = square();
    let img = flat_image(12, 10);
    let opts = OverlayOptions::default()
        .threshold(1.0)
        .contour_color([255, 0, 255]);
    let out = map.overlay(&img, &opts).unwrap();
    let plain = map.overlay(&img, &OverlayOptions::default()).unwrap();
    let c = map.contour(1.0, 1);
    for (x, y, p) in out.enumerate_pixels() {
        if c[(y as usize, x as usize)] {
            assert_eq!(p.0, [255, 0, 255]);
        } else {
            assert_eq!(p, plain.get_pixel(x, y));
        }
    }
}

#[test]
fn size_mismatch_names_both_sizes() {
    let err = square().overlay(&flat_image(10, 12), &OverlayOptions::default());
    match err {
        Err(e @ Error::SizeMismatch { .. }) => {
            let Error::SizeMismatch { expected, got, .. } = &e else {
                unreachable!()
            };
            assert_eq!((*expected, *got), ((12, 10), (10, 12)));
            let msg = e.to_string();
            assert!(msg.contains("12x10") && msg.contains("10x12"), "{msg}");
        }
        other => panic!("expected SizeMismatch, got {other:?}"),
    }
}

#[test]
fn bad_options_name_the_field() {
    let name_of = |o: OverlayOptions| match one_hot().overlay(&flat_image(8, 6), &o) {
        Err(Error::InvalidParam { name, .. }) => name,
        other => panic!("expected InvalidParam, got {other:?}"),
    };
    assert_eq!(name_of(OverlayOptions::default().alpha(1.5)), "alpha");
    assert_eq!(name_of(OverlayOptions::default().alpha(f32::NAN)), "alpha");
    assert_eq!(
        name_of(OverlayOptions::default().fixed_range(2.0, 2.0)),
        "range"
    );
    assert_eq!(
        name_of(OverlayOptions::default().threshold(f32::INFINITY)),
        "threshold"
    );
    assert_eq!(
        name_of(OverlayOptions::default().contour_width(0)),
        "contour_width"
    );
}

#[test]
fn gray_export_spans_black_to_white_and_saves() {
    let map = square();
    let g = map.to_gray(MapRange::MinMax).unwrap();
    assert_eq!(g.get_pixel(6, 5).0, [255]);
    assert_eq!(g.get_pixel(0, 0).0, [0]);
    let g = map.to_gray(MapRange::Fixed { lo: 0.0, hi: 10.0 }).unwrap();
    assert_eq!(g.get_pixel(6, 5).0, [128]); // round(127.5)
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("overlay.png");
    let opts = OverlayOptions::default().threshold(1.0);
    let img = flat_image(12, 10);
    map.save_overlay(&img, &opts, &path).unwrap();
    let back = image::open(&path).unwrap().to_rgb8();
    assert_eq!(back, map.overlay(&img, &opts).unwrap());
}

/// libtorch's `upsample_bilinear2d(align_corners = false)` is the oracle.
#[test]
fn resize_matches_libtorch_bilinear() {
    let v = Array2::from_shape_fn((5, 7), |(y, x)| {
        ((x * 3 + y * 5) % 7) as f32 * 0.5 - y as f32
    });
    let map = AnomalyMap::new(v.clone()).unwrap();
    let t = tch::Tensor::from_slice(v.as_slice().unwrap()).reshape([1, 1, 5, 7]);
    for (w, h) in [(13usize, 9usize), (3, 2), (7, 5), (20, 4)] {
        let got = map.resize(w as u32, h as u32).unwrap();
        assert_eq!((got.width(), got.height()), (w as u32, h as u32));
        let want = t.upsample_bilinear2d([h as i64, w as i64], false, None, None);
        let want: Vec<f32> = Vec::try_from(want.flatten(0, -1)).unwrap();
        for (g, w_) in got.view().iter().zip(&want) {
            assert!((g - w_).abs() < 1e-5, "{w}x{h}: {g} vs {w_}");
        }
    }
    assert!(matches!(map.resize(0, 3), Err(Error::InvalidParam { .. })));
}

mod gradcam {
    use cutpaste::data::synthetic::{SyntheticKind, SyntheticSpec};
    use cutpaste::density::FittedDensity;
    use cutpaste::heatmap::TorchGaussian;
    use cutpaste::model::Precision;
    use cutpaste::prelude::*;
    use image::RgbImage;
    use ndarray::Array2;
    use tch::{Kind, Tensor};

    /// 64 px so that `layer4` is a 2×2 grid; 3 training steps, fp32, CPU.
    fn tiny_detector(density: Density) -> (Detector, SyntheticSpec) {
        tiny_detector_with(density, Precision::Fp32, 3)
    }

    fn tiny_detector_with(
        density: Density,
        precision: Precision,
        steps: usize,
    ) -> (Detector, SyntheticSpec) {
        let spec = SyntheticSpec::new(SyntheticKind::Part).side(64).seed(5);
        let train: Vec<RgbImage> = (0..8).map(|i| spec.train_image(i)).collect();
        let det = Detector::params()
            .image_size(64)
            .batch_images(2)
            .training(TrainParams::paper().steps(steps))
            .density(density)
            .device(Device::Cpu)
            .fast_path(FastPath {
                precision,
                channels_last: precision == Precision::Bf16,
            })
            .seed(11)
            .fit_images_with(train, |_| Control::Continue)
            .unwrap();
        (det, spec)
    }

    fn to_vec(t: &Tensor) -> Vec<f64> {
        Vec::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
    }

    /// `s(A)`: pool `[1, 512, h, w]` activations as the backbone does, then score.
    fn score_of(gauss: &TorchGaussian, a: &[f64], shape: &[i64]) -> f64 {
        let a = Tensor::from_slice(a).reshape(shape);
        let pooled = a.adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        to_vec(&gauss.score(&pooled).unwrap())[0]
    }

    #[test]
    fn gradcam_of_the_gaussian_score() {
        let (det, spec) = tiny_detector(Density::gaussian());
        let FittedDensity::Gaussian(g) = det.density() else {
            panic!("Gaussian expected")
        };
        let gauss = TorchGaussian::new(g, Device::Cpu).unwrap();

        // 1. TorchGaussian equals the fitted density on arbitrary features (oracle: LAPACK path)
        let f = Array2::from_shape_fn((5, 512), |(i, j)| ((i * 31 + j * 17) % 13) as f32 - 4.0);
        let want = g.score_f64(f.view()).unwrap();
        let t = Tensor::from_slice(f.as_slice().unwrap()).reshape([5, 512]);
        for (got, want) in to_vec(&gauss.score(&t).unwrap()).iter().zip(&want) {
            assert!(
                (got - want).abs() <= 1e-8 * want.abs().max(1.0),
                "{got} vs {want}"
            );
        }

        // 2. the differentiable score of an image equals the detector's score of that image,
        //    for a defect image at a non-square size
        let defect = spec.defect_sample(0).image;
        let wide = image::imageops::resize(&defect, 80, 56, image::imageops::FilterType::Triangle);
        let parts = det.gradcam_explained(std::slice::from_ref(&wide)).unwrap();
        let p = &parts[0];
        let s = f64::from(det.score(&wide).unwrap());
        assert!((p.score - s).abs() <= 1e-4 * s.abs(), "{} vs {s}", p.score);

        // 3. map at the caller's size, all values >= 0, not all 0 (the pre-ReLU map has zero
        //    mean over the grid, see 5.), and gradcam() returns the same map
        let map = &p.map;
        assert_eq!((map.width(), map.height()), (80, 56));
        assert!(map.view().iter().all(|&v| v >= 0.0));
        assert!(map.max().0 > 0.0);
        assert_eq!(&det.gradcam(&wide).unwrap(), map);
        // gradients are enabled inside even when the caller disabled them
        assert_eq!(&tch::no_grad(|| det.gradcam(&wide)).unwrap(), map);

        // 4. autograd vs central finite difference on the largest-gradient activation
        let shape = p.activations.size();
        assert_eq!(shape, vec![1, 512, 2, 2]);
        let a = to_vec(&p.activations);
        let grads = to_vec(&p.gradients);
        let k = (0..grads.len())
            .max_by(|&i, &j| grads[i].abs().total_cmp(&grads[j].abs()))
            .unwrap();
        let h = 1e-4 * a[k].abs().max(1.0);
        let (mut plus, mut minus) = (a.clone(), a.clone());
        plus[k] += h;
        minus[k] -= h;
        let fd = (score_of(&gauss, &plus, &shape) - score_of(&gauss, &minus, &shape)) / (2.0 * h);
        eprintln!(
            "score: gradcam {} detector {s}; d/dA[{k}]: finite difference {fd}, autograd {}",
            p.score, grads[k]
        );
        assert!(
            (fd - grads[k]).abs() <= 1e-3 * grads[k].abs() + 1e-6,
            "finite difference {fd} vs autograd {}",
            grads[k]
        );
        // and the score at A itself is the reported one
        assert!((score_of(&gauss, &a, &shape) - p.score).abs() <= 1e-6 * p.score);

        // 5. the L2-normalised score is scale invariant: Σ A·∂s/∂A = 0 (Euler)
        let dot: f64 = a.iter().zip(&grads).map(|(x, g)| x * g).sum();
        let scale: f64 = a.iter().zip(&grads).map(|(x, g)| (x * g).abs()).sum();
        eprintln!("sum A*grad = {dot:e} (sum |A*grad| = {scale:e})");
        assert!(dot.abs() <= 1e-4 * scale, "{dot} vs {scale}");

        // 6. batches give the same maps as single images, whatever the sizes
        let square = spec.test_good_image(0);
        let both = det.gradcam_batch(&[square.clone(), wide.clone()]).unwrap();
        assert_eq!((both[0].width(), both[0].height()), (64, 64));
        let single = det.gradcam(&square).unwrap();
        for (x, y) in both[0].view().iter().zip(single.view()) {
            assert!((x - y).abs() <= 1e-4 * single.max().0.max(1e-6));
        }
    }

    #[test]
    fn gradcam_needs_the_gaussian_density() {
        let (det, spec) = tiny_detector(Density::kde());
        match det.gradcam(&spec.train_image(0)) {
            Err(e @ Error::Unsupported { .. }) => {
                assert_eq!(e.kind(), ErrorKind::Unsupported);
                assert!(e.to_string().contains("Density::gaussian()"), "{e}");
            }
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    #[test]
    fn gradcam_runs_in_fp32_on_a_bf16_detector() {
        let (det, spec) = tiny_detector_with(Density::gaussian(), Precision::Bf16, 1);
        let image = spec.defect_sample(1).image;
        let p = det.gradcam_explained(std::slice::from_ref(&image)).unwrap();
        assert_eq!(p[0].activations.kind(), Kind::Float);
        assert_eq!(p[0].gradients.kind(), Kind::Float);
        assert!(!cutpaste::model::autocast_enabled(Device::Cpu));
        // the bf16 scoring path and the fp32 GradCAM path see the same network
        let s = f64::from(det.score(&image).unwrap());
        eprintln!("bf16 detector score {s}, fp32 GradCAM score {}", p[0].score);
        assert!((p[0].score - s).abs() <= 0.03 * s, "{} vs {s}", p[0].score);
        assert!(p[0].map.view().iter().all(|&v| v >= 0.0));
    }
}
