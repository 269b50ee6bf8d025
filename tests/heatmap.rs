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
