//! Properties of the augmentation views over many seeds (issue 3): locality of the footprint,
//! geometry ranges, labels, determinism, thread-count independence, errors instead of panics.
use cutpaste::augment::{
    batch_views, cutout, cutpaste, image_seed, rotate_quarters, scar, scar_cutout, Augmentation,
    CutPasteParams, CutoutFill, PreAugment, ScarParams, Variant, ViewKind,
};
use cutpaste::Error;
use image::{GrayImage, RgbImage};
use proptest::prelude::*;

/// A deterministic noisy colour image (xorshift), so every pixel differs from its neighbours.
fn noise_image(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    RgbImage::from_fn(w, h, |_, _| {
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        };
        image::Rgb([next(), next(), next()])
    })
}

const SYNTHETIC: [Variant; 6] = [
    Variant::Binary,
    Variant::BinaryScar,
    Variant::Union,
    Variant::ThreeWay,
    Variant::Cutout,
    Variant::ScarCutout,
];

/// Asserts `a` and `b` agree on every pixel where `mask` is 0; returns the footprint size.
fn assert_equal_outside(a: &RgbImage, b: &RgbImage, mask: &GrayImage) -> usize {
    assert_eq!(a.dimensions(), b.dimensions());
    assert_eq!(a.dimensions(), mask.dimensions());
    let mut inside = 0;
    for (x, y, m) in mask.enumerate_pixels() {
        match m.0[0] {
            0 => assert_eq!(
                a.get_pixel(x, y),
                b.get_pixel(x, y),
                "pixel ({x}, {y}) outside footprint changed"
            ),
            255 => inside += 1,
            v => panic!("footprint value {v} is neither 0 nor 255"),
        }
    }
    inside
}

fn expected_labels(v: Variant) -> Vec<usize> {
    match v {
        Variant::ThreeWay => vec![0, 1, 2],
        Variant::Rotation => vec![0, 1, 2, 3],
        _ => vec![0, 1],
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn synthetic_views_change_only_their_footprint(
        seed in any::<u64>(), vi in 0usize..6, w in 32u32..64, h in 32u32..64, pre in any::<bool>()
    ) {
        let variant = SYNTHETIC[vi];
        let img = noise_image(w, h, seed ^ 0xABCD);
        let aug = Augmentation::new(variant).pre_augment(pre.then(PreAugment::paper));
        let views = aug.views(&img, seed).unwrap();
        prop_assert_eq!(views.len(), aug.views_per_image());
        prop_assert_eq!(views.iter().map(|v| v.label).collect::<Vec<_>>(), expected_labels(variant));
        // View 0 is the pre-augmented source: reproducible on its own from the same seed.
        let base = if pre { PreAugment::paper().apply(&img, seed).unwrap().image } else { img.clone() };
        prop_assert!(views[0].image == base);
        prop_assert!(views[0].footprint.is_none());
        prop_assert_eq!(views[0].kind, ViewKind::Normal);
        for v in &views[1..] {
            prop_assert_eq!(v.image.dimensions(), (w, h));
            let fp = v.footprint.as_ref().expect("synthetic views carry a footprint");
            let n = assert_equal_outside(&v.image, &base, fp);
            prop_assert!(n > 0, "empty footprint");
            prop_assert!(v.image != base || v.kind == ViewKind::CutPaste, "{:?} view left the image unchanged", v.kind);
        }
    }

    #[test]
    fn cutpaste_geometry_follows_appendix_a2(seed in any::<u64>(), side in 32u32..96) {
        let img = noise_image(side, side, seed);
        let o = cutpaste(&img, &CutPasteParams::paper(), seed).unwrap();
        prop_assert!((0.02..=0.15).contains(&o.area_ratio), "area ratio {}", o.area_ratio);
        prop_assert!((0.3..=1.0 / 0.3 + 1e-12).contains(&o.aspect_ratio), "aspect {}", o.aspect_ratio);
        let target = o.area_ratio * f64::from(side * side);
        let (ew, eh) = ((target * o.aspect_ratio).sqrt(), (target / o.aspect_ratio).sqrt());
        prop_assert!((f64::from(o.source.width) - ew).abs() <= 0.5 + 1e-9);
        prop_assert!((f64::from(o.source.height) - eh).abs() <= 0.5 + 1e-9);
        // Realised area within [0.02, 0.15] of the image up to the rounding of both sides.
        let slack = (0.5 * (ew + eh) + 0.25) / f64::from(side * side);
        let realised = o.source.area() as f64 / f64::from(side * side);
        prop_assert!(realised >= 0.02 - slack && realised <= 0.15 + slack, "{realised}");
        prop_assert_eq!((o.source.width, o.source.height), (o.destination.width, o.destination.height));
        prop_assert!(o.source.fits_in(side, side) && o.destination.fits_in(side, side));
        // The footprint is exactly the destination rectangle, holding the jittered source patch.
        let mut patch = image::imageops::crop_imm(&img, o.source.x, o.source.y, o.source.width, o.source.height).to_image();
        o.jitter.apply(&mut patch);
        for (x, y, m) in o.footprint.enumerate_pixels() {
            prop_assert_eq!(m.0[0] == 255, o.destination.contains(x, y));
            if o.destination.contains(x, y) {
                prop_assert_eq!(o.image.get_pixel(x, y), patch.get_pixel(x - o.destination.x, y - o.destination.y));
            } else {
                prop_assert_eq!(o.image.get_pixel(x, y), img.get_pixel(x, y));
            }
        }
    }

    #[test]
    fn scar_geometry_and_rotated_footprint(seed in any::<u64>(), side in 30u32..80) {
        let img = noise_image(side, side, seed);
        let o = scar(&img, &ScarParams::paper(), seed).unwrap();
        prop_assert!((2..=16).contains(&o.width) && (10..=25).contains(&o.length));
        prop_assert!(o.angle_deg > -45.0 && o.angle_deg < 45.0, "angle {}", o.angle_deg);
        prop_assert_eq!((o.source.width, o.source.height), (o.width, o.length));
        prop_assert!(o.source.fits_in(side, side) && o.destination.fits_in(side, side));
        // Oracle: a pixel centre at offset p from the box centre is in the scar iff its
        // coordinates along the rotated axes e_w = (cos, −sin), e_l = (sin, cos) (counter-
        // clockwise on screen, y down) lie within half the width / length. Pixels within 1e-6 of
        // the border may go either way.
        let (s, c) = o.angle_deg.to_radians().sin_cos();
        let d = o.destination;
        let (cx, cy) = (f64::from(d.x) + f64::from(d.width) / 2.0, f64::from(d.y) + f64::from(d.height) / 2.0);
        let (hw, hl) = (f64::from(o.width) / 2.0, f64::from(o.length) / 2.0);
        let mut count = 0u64;
        for (x, y, m) in o.footprint.enumerate_pixels() {
            let (px, py) = (f64::from(x) + 0.5 - cx, f64::from(y) + 0.5 - cy);
            let (a, b) = (c * px - s * py, s * px + c * py);
            let inside = m.0[0] == 255;
            count += u64::from(inside);
            if a.abs() < hw - 1e-6 && b.abs() < hl - 1e-6 {
                prop_assert!(inside, "({x},{y}) should be in the scar");
            } else if a.abs() > hw + 1e-6 || b.abs() > hl + 1e-6 {
                prop_assert!(!inside, "({x},{y}) should not be in the scar");
            }
            if !inside {
                prop_assert_eq!(o.image.get_pixel(x, y), img.get_pixel(x, y));
            }
        }
        // Nearest-neighbour rasterisation keeps the area up to the border pixels.
        let area = u64::from(o.width * o.length);
        prop_assert!(count.abs_diff(area) <= u64::from(o.width + o.length) + 2, "{count} vs {area}");
        if o.angle_deg.abs() > 10.0 {
            prop_assert!(count < d.area(), "rotated footprint must not be its bounding box");
        }
    }

    #[test]
    fn small_or_odd_images_error_instead_of_panicking(w in 0u32..40, h in 0u32..40, seed in any::<u64>(), vi in 0usize..7) {
        let all = [SYNTHETIC.as_slice(), &[Variant::Rotation]].concat();
        let img = RgbImage::new(w, h);
        match Augmentation::new(all[vi]).views(&img, seed) {
            Ok(views) => prop_assert!(views.iter().all(|v| v.image.dimensions() == (w, h))),
            Err(Error::ImageTooSmall { .. } | Error::InvalidParam { .. } | Error::InvalidInput { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
        for r in [
            cutpaste(&img, &CutPasteParams::paper(), seed).map(|_| ()),
            scar(&img, &ScarParams::paper(), seed).map(|_| ()),
            cutout(&img, &CutPasteParams::paper(), CutoutFill::Random, seed).map(|_| ()),
            scar_cutout(&img, &ScarParams::paper(), seed).map(|_| ()),
            rotate_quarters(&img, 1).map(|_| ()),
        ] {
            let ok = matches!(r, Ok(()) | Err(Error::ImageTooSmall { .. } | Error::InvalidParam { .. } | Error::InvalidInput { .. }));
            prop_assert!(ok, "unexpected result {:?}", r);
        }
    }
}

#[test]
fn size_limits_are_exact_and_seed_independent() {
    // Smallest CutPaste side: √(0.02 · 0.3) · s ≥ 0.5 ⇔ s ≥ 6.45.
    let cp = Augmentation::cutpaste();
    assert!(matches!(
        cp.views(&noise_image(6, 6, 1), 0),
        Err(Error::ImageTooSmall { min: 7, .. })
    ));
    for seed in 0..50 {
        assert!(cp.views(&noise_image(7, 7, 1), seed).is_ok());
    }
    // Largest scar 16 × 25 over ±45°: box width ≤ 41/√2 = 28.99, height ≤ √(16² + 25²) = 29.68.
    assert_eq!(ScarParams::paper().min_image_size(), (29, 30));
    let sc = Augmentation::scar();
    assert!(matches!(
        sc.views(&noise_image(29, 29, 1), 0),
        Err(Error::ImageTooSmall { min: 30, .. })
    ));
    for seed in 0..200 {
        assert!(sc.views(&noise_image(29, 30, 1), seed).is_ok());
    }
    // Rotation needs square images.
    let err = Augmentation::rotation()
        .views(&noise_image(32, 33, 1), 0)
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { name, .. } if name == "image"),
        "{err}"
    );
}

#[test]
fn rotation_views_are_counter_clockwise_quarter_turns() {
    let img = noise_image(33, 33, 5);
    let views = Augmentation::rotation().views(&img, 11).unwrap();
    assert_eq!(
        views.iter().map(|v| v.label).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    // Oracle: one counter-clockwise quarter turn maps input (W − 1 − y, x) to output (x, y).
    let n = 33;
    for k in 1..4 {
        assert!(views[k].footprint.is_none());
        assert_eq!(views[k].kind, ViewKind::Rotated(k as u8));
        for y in 0..n {
            for x in 0..n {
                let (sx, sy) = (n - 1 - y, x);
                assert_eq!(
                    views[k].image.get_pixel(x, y),
                    views[k - 1].image.get_pixel(sx, sy)
                );
            }
        }
    }
}

#[test]
fn same_seed_same_views_and_different_seeds_differ() {
    let img = noise_image(48, 48, 3);
    for v in SYNTHETIC.into_iter().chain([Variant::Rotation]) {
        let aug = Augmentation::new(v);
        let a = aug.views(&img, 42).unwrap();
        assert_eq!(a, aug.views(&img, 42).unwrap(), "{v:?} not reproducible");
        let b = aug.views(&img, 43).unwrap();
        assert_ne!(
            a[1].image, b[1].image,
            "{v:?}: seeds 42 and 43 gave the same view"
        );
    }
}

#[test]
fn union_draws_cutpaste_and_scar_about_half_each() {
    let img = noise_image(40, 40, 9);
    let aug = Augmentation::union();
    let n_cutpaste = (0..400)
        .filter(|&s| aug.views(&img, s).unwrap()[1].kind == ViewKind::CutPaste)
        .count();
    // Binomial(400, ½): ±4.5 standard deviations.
    assert!((155..=245).contains(&n_cutpaste), "{n_cutpaste} of 400");
}

#[test]
fn cutout_fills_with_the_requested_colour() {
    let img = noise_image(40, 40, 2);
    let o = cutout(&img, &CutPasteParams::paper(), CutoutFill::Gray, 1).unwrap();
    assert_eq!(o.colour, [128; 3]);
    let o = cutout(&img, &CutPasteParams::paper(), CutoutFill::Mean, 1).unwrap();
    let mean = |c: usize| {
        let s: u64 = img.pixels().map(|p| u64::from(p.0[c])).sum();
        (s as f64 / 1600.0).round() as u8
    };
    assert_eq!(o.colour, [mean(0), mean(1), mean(2)]);
    for (x, y, m) in o.footprint.enumerate_pixels() {
        if m.0[0] == 255 {
            assert_eq!(o.image.get_pixel(x, y).0, o.colour);
        }
    }
    let o = scar_cutout(&img, &ScarParams::paper(), 1).unwrap();
    assert!(o.footprint.pixels().any(|m| m.0[0] == 255));
    for (x, y, m) in o.footprint.enumerate_pixels() {
        if m.0[0] == 255 {
            assert_eq!(o.image.get_pixel(x, y).0, o.colour);
        }
    }
}

#[test]
fn batch_is_image_major_and_matches_per_image_views() {
    let images: Vec<RgbImage> = (0..7).map(|i| noise_image(40, 40, i)).collect();
    let aug = Augmentation::three_way();
    let all = batch_views(&aug, &images, 99).unwrap();
    assert_eq!(all.len(), 21);
    for (i, img) in images.iter().enumerate() {
        let views = aug.views(img, image_seed(99, i)).unwrap();
        assert_eq!(&all[3 * i..3 * i + 3], views.as_slice());
    }
    assert_ne!(image_seed(99, 0), image_seed(99, 1));
    assert_ne!(image_seed(99, 0), image_seed(100, 0));
    let mut bad = images.clone();
    bad[4] = noise_image(20, 20, 0);
    assert!(matches!(
        batch_views(&aug, &bad, 1),
        Err(Error::ImageTooSmall { .. })
    ));
}

#[cfg(feature = "parallel")]
#[test]
fn batch_is_independent_of_thread_count() {
    let images: Vec<RgbImage> = (0..9).map(|i| noise_image(36, 36, i)).collect();
    let aug = Augmentation::union();
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| batch_views(&aug, &images, 5).unwrap())
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(4));
}

#[test]
fn invalid_parameters_are_rejected_by_name() {
    use cutpaste::augment::ColorJitter;
    let cases: Vec<(Augmentation, &str)> = vec![
        (Augmentation::cutpaste().area_ratio(0.0, 0.1), "area_ratio"),
        (Augmentation::cutpaste().area_ratio(0.2, 0.1), "area_ratio"),
        (Augmentation::cutpaste().area_ratio(0.1, 1.0), "area_ratio"),
        (
            Augmentation::cutpaste().aspect_ratio(-1.0, 2.0),
            "aspect_ratio",
        ),
        (
            Augmentation::cutpaste().aspect_ratio(f64::NAN, 2.0),
            "aspect_ratio",
        ),
        (Augmentation::scar().scar_width(1, 4), "scar_width"),
        (Augmentation::scar().scar_length(12, 10), "scar_length"),
        (
            Augmentation::scar().scar_rotation(-200.0, 0.0),
            "scar_rotation",
        ),
        (
            Augmentation::three_way().patch_jitter(ColorJitter::new(0.1, -0.1, 0.1, 0.1)),
            "patch_jitter.contrast",
        ),
        (
            Augmentation::three_way().patch_jitter(ColorJitter::uniform(0.6)),
            "patch_jitter.hue",
        ),
        (
            Augmentation::rotation().pre_augment(Some(PreAugment::paper().translate(0.5))),
            "pre_augment.translate",
        ),
        (
            Augmentation::rotation().pre_augment(Some(
                PreAugment::paper().jitter(ColorJitter::new(f32::INFINITY, 0.0, 0.0, 0.0)),
            )),
            "pre_augment.jitter.brightness",
        ),
    ];
    let img = noise_image(64, 64, 0);
    for (aug, expected) in cases {
        match aug.views(&img, 0) {
            Err(Error::InvalidParam { name, .. }) => assert_eq!(name, expected),
            other => panic!("{expected}: expected InvalidParam, got {other:?}"),
        }
    }
    // Parameters a label set does not use are not checked.
    assert!(Augmentation::cutpaste()
        .scar_width(0, 0)
        .views(&img, 0)
        .is_ok());
}

#[test]
fn augmentation_round_trips_through_serde() {
    let aug = Augmentation::union()
        .area_ratio(0.05, 0.1)
        .scar_rotation(-30.0, 30.0)
        .cutout_fill(CutoutFill::Random)
        .pre_augment(None);
    let json = serde_json::to_string(&aug).unwrap();
    let back: Augmentation = serde_json::from_str(&json).unwrap();
    assert_eq!(aug, back);
    assert_eq!(back.num_classes(), 2);
    assert_eq!(Augmentation::three_way().num_classes(), 3);
    assert_eq!(Augmentation::rotation().views_per_image(), 4);
}
