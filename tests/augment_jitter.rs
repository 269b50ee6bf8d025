//! Colour jitter (torchvision `ColorJitter` semantics) and pre-augmentation against independent
//! oracles written here in f64 (issue 3).
use cutpaste::augment::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, color_jitter, translate,
    ColorJitter, JitterOp, PadMode, PreAugment,
};
use image::{Rgb, RgbImage};
use proptest::prelude::*;

fn noise_image(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    RgbImage::from_fn(w, h, |_, _| {
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        };
        Rgb([next(), next(), next()])
    })
}

fn round_clamp(v: f64) -> f64 {
    v.clamp(0.0, 255.0).round()
}

fn luma(p: &Rgb<u8>) -> f64 {
    0.299 * f64::from(p.0[0]) + 0.587 * f64::from(p.0[1]) + 0.114 * f64::from(p.0[2])
}

/// Asserts every channel of `out` is within 1 of `oracle(input pixel)` (f32 vs f64 rounding).
fn assert_close(input: &RgbImage, out: &RgbImage, oracle: impl Fn(&Rgb<u8>) -> [f64; 3]) {
    for (p, q) in input.pixels().zip(out.pixels()) {
        let want = oracle(p);
        for c in 0..3 {
            assert!(
                (f64::from(q.0[c]) - want[c]).abs() <= 1.0,
                "{:?} -> {:?}, oracle {want:?}",
                p.0,
                q.0
            );
        }
    }
}

/// Textbook HSV hue rotation in f64 (Smith 1978), independent of the crate's formulation.
fn hue_oracle(p: &Rgb<u8>, shift: f64) -> [f64; 3] {
    let [r, g, b] = p.0.map(f64::from);
    let (max, min) = (r.max(g).max(b), r.min(g).min(b));
    if max == min {
        return [r, g, b];
    }
    let d = max - min;
    let mut h = if max == r {
        ((g - b) / d) / 6.0
    } else if max == g {
        (2.0 + (b - r) / d) / 6.0
    } else {
        (4.0 + (r - g) / d) / 6.0
    };
    h = (h + shift).rem_euclid(1.0);
    let (v, s) = (max, d / max);
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let (p_, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let rgb = match i as i64 % 6 {
        0 => [v, t, p_],
        1 => [q, v, p_],
        2 => [p_, v, t],
        3 => [p_, q, v],
        4 => [t, p_, v],
        _ => [v, p_, q],
    };
    rgb.map(round_clamp)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn zero_jitter_is_the_identity(seed in any::<u64>(), w in 1u32..24, h in 1u32..24) {
        let img = noise_image(w, h, seed);
        let (out, f) = color_jitter(&img, &ColorJitter::none(), seed).unwrap();
        prop_assert!(out == img);
        prop_assert!(f.brightness.is_none() && f.contrast.is_none() && f.saturation.is_none() && f.hue.is_none());
    }

    #[test]
    fn sampled_factors_stay_within_their_bounds(seed in any::<u64>(), b in 0.0f32..2.0, c in 0.0f32..0.9, s in 0.0f32..0.9, h in 0.0f32..0.5) {
        let f = ColorJitter::new(b, c, s, h).sample(seed);
        let within = |x: Option<f32>, m: f32| match x {
            None => m == 0.0,
            Some(v) => v >= (1.0 - m).max(0.0) && v <= 1.0 + m,
        };
        prop_assert!(within(f.brightness, b) && within(f.contrast, c) && within(f.saturation, s));
        let hue_ok = match f.hue { None => h == 0.0, Some(v) => v.abs() <= h };
        prop_assert!(hue_ok, "hue {:?} for strength {}", f.hue, h);
        let mut order = f.order.to_vec();
        order.sort_by_key(|op| JitterOp::ALL.iter().position(|o| o == op));
        prop_assert_eq!(order, JitterOp::ALL.to_vec());
    }

    #[test]
    fn each_operation_matches_its_f64_oracle(seed in any::<u64>(), f in 0.0f32..2.0, shift in -1.0f32..1.0) {
        let img = noise_image(16, 12, seed);
        let fd = f64::from(f);
        let mut out = img.clone();
        adjust_brightness(&mut out, f);
        assert_close(&img, &out, |p| p.0.map(|v| round_clamp(f64::from(v) * fd)));

        let mean = img.pixels().map(luma).sum::<f64>() / f64::from(16 * 12);
        let mut out = img.clone();
        adjust_contrast(&mut out, f);
        assert_close(&img, &out, |p| p.0.map(|v| round_clamp(fd * f64::from(v) + (1.0 - fd) * mean)));

        let mut out = img.clone();
        adjust_saturation(&mut out, f);
        assert_close(&img, &out, |p| p.0.map(|v| round_clamp(fd * f64::from(v) + (1.0 - fd) * luma(p))));

        let mut out = img.clone();
        adjust_hue(&mut out, shift);
        assert_close(&img, &out, |p| hue_oracle(p, f64::from(shift)));
        // Hue wraps: a whole turn more is the same shift.
        let mut wrapped = img.clone();
        adjust_hue(&mut wrapped, shift + 1.0);
        assert_close(&out, &wrapped, |p| p.0.map(f64::from));
    }

    #[test]
    fn jitter_runs_the_drawn_operations_in_the_drawn_order(seed in any::<u64>(), w in 8u32..72) {
        // Up to 72 × 40 pixels: more than one tile of the fused kernels.
        let img = noise_image(w, 40, seed);
        let (out, f) = color_jitter(&img, &ColorJitter::paper(), seed).unwrap();
        let mut manual = img.clone();
        for op in f.order {
            match op {
                JitterOp::Brightness => adjust_brightness(&mut manual, f.brightness.unwrap()),
                JitterOp::Contrast => adjust_contrast(&mut manual, f.contrast.unwrap()),
                JitterOp::Saturation => adjust_saturation(&mut manual, f.saturation.unwrap()),
                JitterOp::Hue => adjust_hue(&mut manual, f.hue.unwrap()),
            }
        }
        prop_assert!(out == manual);
    }

    #[test]
    fn translation_shifts_within_bounds_and_pads(seed in any::<u64>(), w in 8u32..48, h in 8u32..48) {
        let img = noise_image(w, h, seed);
        let pre = PreAugment::paper().jitter(ColorJitter::none());
        let o = pre.apply(&img, seed).unwrap();
        prop_assert!(o.dx.unsigned_abs() <= w / 8 && o.dy.unsigned_abs() <= h / 8, "({}, {})", o.dx, o.dy);
        // Reflection (numpy 'reflect') oracle for every output pixel.
        let reflect = |i: i64, n: i64| if i < 0 { -i } else if i >= n { 2 * (n - 1) - i } else { i };
        for (x, y, p) in o.image.enumerate_pixels() {
            let sx = reflect(i64::from(x) - i64::from(o.dx), i64::from(w)) as u32;
            let sy = reflect(i64::from(y) - i64::from(o.dy), i64::from(h)) as u32;
            prop_assert_eq!(p, img.get_pixel(sx, sy));
        }
    }
}

#[test]
fn hue_hand_computed_cases() {
    let mut img = RgbImage::from_raw(3, 1, vec![255, 0, 0, 0, 0, 255, 90, 90, 90]).unwrap();
    adjust_hue(&mut img, 0.5);
    // red → cyan, blue → yellow, grey unchanged.
    assert_eq!(img.as_raw(), &vec![0, 255, 255, 255, 255, 0, 90, 90, 90]);
    let mut img = RgbImage::from_raw(1, 1, vec![255, 0, 0]).unwrap();
    adjust_hue(&mut img, -0.25); // 270°: R = 255 − 255·0.5 = 127.5 → 128, G = 0, B = 255
    assert_eq!(img.as_raw(), &vec![128, 0, 255]);
}

#[test]
fn edge_and_constant_padding() {
    let img = noise_image(10, 6, 4);
    let out = translate(&img, 3, -2, PadMode::Edge);
    assert_eq!(out.get_pixel(0, 5), img.get_pixel(0, 5)); // clamped to (0, 5)
    assert_eq!(out.get_pixel(5, 1), img.get_pixel(2, 3));
    let out = translate(&img, -4, 1, PadMode::Constant([1, 2, 3]));
    assert_eq!(out.get_pixel(9, 3).0, [1, 2, 3]);
    assert_eq!(out.get_pixel(4, 0).0, [1, 2, 3]);
    assert_eq!(out.get_pixel(0, 1), img.get_pixel(4, 0));
    // Shifts beyond the image still work.
    let out = translate(&img, 25, 0, PadMode::Constant([7, 7, 7]));
    assert!(out.pixels().all(|p| p.0 == [7, 7, 7]));
    let _ = translate(&img, -25, 40, PadMode::Reflect);
}
