//! Data layer: odd images, broken files, dataset layouts, the synthetic generator, and the real
//! MVTec bottle folder when present (`../shared/data/mvtec/bottle`; skipped when absent).
use cutpaste::data::synthetic::{SyntheticKind, SyntheticSpec, MARKER};
use cutpaste::data::{
    image_io, load_mask, load_rgb, load_rgb_resized, Dataset, FolderDataset, MvtecOptions,
};
use cutpaste::Error;
use image::{
    DynamicImage, GrayAlphaImage, GrayImage, ImageBuffer, Luma, LumaA, Rgb, RgbImage, Rgba,
    RgbaImage,
};
use std::path::{Path, PathBuf};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn mkdirs(p: &Path) {
    std::fs::create_dir_all(p).unwrap();
}

#[test]
fn odd_images_become_rgb8() {
    let d = tmp();
    let gray = GrayImage::from_fn(4, 3, |x, _| Luma([x as u8 * 50]));
    gray.save(d.path().join("gray.png")).unwrap();
    let ga = GrayAlphaImage::from_pixel(4, 3, LumaA([77, 10]));
    ga.save(d.path().join("ga.png")).unwrap();
    let rgba = RgbaImage::from_pixel(4, 3, Rgba([10, 20, 30, 0]));
    rgba.save(d.path().join("rgba.png")).unwrap();
    let g16: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_pixel(4, 3, Luma([65535]));
    g16.save(d.path().join("g16.png")).unwrap();
    let rgb16: ImageBuffer<Rgb<u16>, Vec<u16>> =
        ImageBuffer::from_pixel(4, 3, Rgb([0, 32896, 65535]));
    DynamicImage::ImageRgb16(rgb16)
        .save(d.path().join("rgb16.tiff"))
        .unwrap();
    RgbImage::from_pixel(4, 3, Rgb([200, 100, 50]))
        .save(d.path().join("c.bmp"))
        .unwrap();
    RgbImage::from_pixel(16, 16, Rgb([200, 100, 50]))
        .save(d.path().join("c.jpg"))
        .unwrap();

    assert_eq!(
        load_rgb(d.path().join("gray.png")).unwrap().get_pixel(2, 0),
        &Rgb([100; 3])
    );
    assert_eq!(
        load_rgb(d.path().join("ga.png")).unwrap().get_pixel(0, 0),
        &Rgb([77; 3])
    );
    assert_eq!(
        load_rgb(d.path().join("rgba.png")).unwrap().get_pixel(0, 0),
        &Rgb([10, 20, 30])
    );
    assert_eq!(
        load_rgb(d.path().join("g16.png")).unwrap().get_pixel(0, 0),
        &Rgb([255; 3])
    );
    assert_eq!(
        load_rgb(d.path().join("rgb16.tiff"))
            .unwrap()
            .get_pixel(1, 1),
        &Rgb([0, 128, 255])
    );
    assert_eq!(
        load_rgb(d.path().join("c.bmp")).unwrap().get_pixel(3, 2),
        &Rgb([200, 100, 50])
    );
    let jpg = load_rgb(d.path().join("c.jpg")).unwrap();
    let px = jpg.get_pixel(8, 8).0;
    for (a, b) in px.iter().zip([200u8, 100, 50]) {
        assert!((*a as i32 - b as i32).abs() <= 4, "jpeg pixel {px:?}");
    }
    let r = load_rgb_resized(d.path().join("c.jpg"), 8).unwrap();
    assert_eq!(r.dimensions(), (8, 8));
}

#[test]
fn masks_are_binarised_and_resized_nearest() {
    let d = tmp();
    let m = GrayImage::from_fn(4, 4, |x, _| Luma([[0, 127, 128, 255][x as usize]]));
    m.save(d.path().join("m.png")).unwrap();
    let b = load_mask(d.path().join("m.png")).unwrap();
    let row: Vec<u8> = (0..4).map(|x| b.get_pixel(x, 0).0[0]).collect();
    assert_eq!(row, vec![0, 0, 255, 255]);
    let up = image_io::resize_mask(&b, 8);
    assert!(up.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
    assert_eq!(up.pixels().filter(|p| p.0[0] == 255).count(), 32);
}

fn assert_image_error_names(path: &Path) {
    match load_rgb(path) {
        Err(e @ (Error::Image { .. } | Error::Io { .. })) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()),
                "message lacks the path: {msg}"
            );
        }
        other => panic!(
            "expected an Image/Io error for {}, got {other:?}",
            path.display()
        ),
    }
}

#[test]
fn broken_files_are_typed_errors_naming_the_path() {
    let d = tmp();
    let zero = d.path().join("zero.png");
    std::fs::write(&zero, b"").unwrap();
    assert_image_error_names(&zero);

    let good = d.path().join("good.png");
    RgbImage::from_fn(32, 32, |x, y| Rgb([x as u8, y as u8, 3]))
        .save(&good)
        .unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let trunc = d.path().join("truncated.png");
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    assert_image_error_names(&trunc);

    let text = d.path().join("notes.png");
    std::fs::write(&text, "this is not an image\n").unwrap();
    assert_image_error_names(&text);

    let missing = d.path().join("missing.png");
    assert!(matches!(load_rgb(&missing), Err(Error::Io { .. })));
}

fn write_png(path: &Path, side: u32, v: u8) {
    mkdirs(path.parent().unwrap());
    RgbImage::from_pixel(side, side, Rgb([v; 3]))
        .save(path)
        .unwrap();
}

fn write_mask(path: &Path, side: u32) {
    mkdirs(path.parent().unwrap());
    GrayImage::from_fn(side, side, |x, _| Luma([if x < 2 { 255 } else { 0 }]))
        .save(path)
        .unwrap();
}

#[test]
fn empty_or_missing_train_good_is_empty_dataset() {
    let d = tmp();
    match Dataset::mvtec(d.path()) {
        Err(Error::EmptyDataset { path }) => assert!(path.ends_with("train/good")),
        other => panic!("expected EmptyDataset, got {other:?}"),
    }
    mkdirs(&d.path().join("train/good"));
    std::fs::write(d.path().join("train/good/.DS_Store"), b"junk").unwrap();
    std::fs::write(d.path().join("train/good/license.txt"), b"text").unwrap();
    assert!(matches!(
        Dataset::mvtec(d.path()),
        Err(Error::EmptyDataset { .. })
    ));
    assert!(matches!(
        FolderDataset::new(d.path().join("nope")).open(),
        Err(Error::EmptyDataset { .. })
    ));
}

/// A small MVTec tree: 3 train, 2 good test, 2 "crack" test images with masks.
fn small_tree(root: &Path) {
    for i in [2, 0, 1] {
        write_png(&root.join(format!("train/good/{i:03}.png")), 8, 10);
    }
    for i in 0..2 {
        write_png(&root.join(format!("test/good/{i:03}.png")), 8, 20);
        write_png(&root.join(format!("test/crack/{i:03}.png")), 8, 30);
        write_mask(&root.join(format!("ground_truth/crack/{i:03}_mask.png")), 8);
    }
    std::fs::write(root.join("license.txt"), b"x").unwrap();
    std::fs::write(root.join("test/crack/.DS_Store"), b"x").unwrap();
}

#[test]
fn mvtec_layout_listing_masks_and_errors() {
    let d = tmp();
    let root = d.path().join("cat");
    small_tree(&root);
    let ds = Dataset::mvtec(&root).unwrap();
    assert_eq!(ds.name, "cat");
    let names: Vec<_> = ds
        .train
        .iter()
        .map(|s| s.path.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["000.png", "001.png", "002.png"]);
    assert_eq!(ds.test.len(), 4);
    assert_eq!(ds.test[0].defect_type, "good");
    assert!(ds.test[0].mask.is_none());
    assert_eq!(ds.test[3].defect_type, "crack");
    assert!(ds.test[3]
        .mask
        .as_ref()
        .unwrap()
        .ends_with("ground_truth/crack/001_mask.png"));
    assert_eq!(ds.defect_types(), vec!["crack".to_string()]);
    let m = ds.test[2].load_mask(8).unwrap().unwrap();
    assert_eq!(m.pixels().filter(|p| p.0[0] == 255).count(), 16);
    let g = ds.test[0].load_mask(8).unwrap().unwrap();
    assert!(g.pixels().all(|p| p.0[0] == 0));

    // a mask of the wrong size
    write_mask(&root.join("ground_truth/crack/001_mask.png"), 6);
    match Dataset::mvtec(&root) {
        Err(Error::MaskMismatch {
            mask_width: 6,
            image_width: 8,
            ..
        }) => {}
        other => panic!("expected MaskMismatch, got {other:?}"),
    }
    // a missing mask: error unless allowed
    std::fs::remove_file(root.join("ground_truth/crack/001_mask.png")).unwrap();
    match Dataset::mvtec(&root) {
        Err(Error::MissingMask { image, .. }) => assert!(image.ends_with("test/crack/001.png")),
        other => panic!("expected MissingMask, got {other:?}"),
    }
    let ds = Dataset::mvtec_with(
        &root,
        MvtecOptions {
            allow_missing_masks: true,
        },
    )
    .unwrap();
    assert!(!ds.has_masks());
    assert_eq!(ds.test[3].load_mask(8).unwrap(), None);
}

#[test]
fn folder_dataset_with_optional_parts() {
    let d = tmp();
    let r = d.path();
    for i in 0..3 {
        write_png(&r.join(format!("ok/{i}.png")), 8, 1);
    }
    write_png(&r.join("holdout/a.png"), 8, 2);
    write_png(&r.join("dent/d0.png"), 8, 3);
    write_png(&r.join("dent/d1.png"), 8, 3);
    write_mask(&r.join("masks/d0.png"), 8);
    let ds = FolderDataset::new(r.join("ok"))
        .test_good(r.join("holdout"))
        .defects(r.join("dent"))
        .masks(r.join("masks"))
        .open()
        .unwrap();
    assert_eq!(ds.train.len(), 3);
    assert_eq!(ds.test.len(), 3);
    assert_eq!(ds.test[1].defect_type, "dent");
    assert!(ds.test[1].mask.is_some());
    assert!(ds.test[2].mask.is_none());
    let strict = FolderDataset::new(r.join("ok"))
        .defects(r.join("dent"))
        .masks(r.join("masks"))
        .require_masks(true)
        .open();
    assert!(matches!(strict, Err(Error::MissingMask { .. })));
}

fn tree_bytes(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn synthetic_is_deterministic_by_seed() {
    let (a, b, c) = (tmp(), tmp(), tmp());
    for kind in [SyntheticKind::Weave, SyntheticKind::Part] {
        let spec = SyntheticSpec::new(kind).side(48).counts(3, 2, 4).seed(5);
        let da = spec.write(a.path()).unwrap();
        let db = spec.write(b.path()).unwrap();
        let dc = spec.clone().seed(6).write(c.path()).unwrap();
        let (ta, tb, tc) = (tree_bytes(&da), tree_bytes(&db), tree_bytes(&dc));
        assert_eq!(ta, tb, "same seed must give byte-identical files");
        assert_eq!(ta.len(), 3 + 2 + 4 * 2 + 1);
        let differing = ta.iter().zip(&tc).filter(|(x, y)| x.1 != y.1).count();
        assert!(
            differing >= 9,
            "another seed changed only {differing} files"
        );
        // re-writing over our own output is allowed
        spec.write(a.path()).unwrap();
    }
}

#[test]
fn synthetic_never_overwrites_foreign_folders() {
    let d = tmp();
    let dir = d.path().join(SyntheticKind::Part.category());
    mkdirs(&dir);
    std::fs::write(dir.join("mine.txt"), b"user data").unwrap();
    let r = SyntheticSpec::new(SyntheticKind::Part)
        .side(32)
        .counts(1, 1, 1)
        .write(d.path());
    assert!(matches!(r, Err(Error::InvalidParam { .. })));
    assert_eq!(std::fs::read(dir.join("mine.txt")).unwrap(), b"user data");
    assert!(!dir.join(MARKER).exists());
}

#[test]
fn synthetic_masks_cover_exactly_the_changed_pixels() {
    for kind in [SyntheticKind::Weave, SyntheticKind::Part] {
        let spec = SyntheticSpec::new(kind).side(64).seed(11);
        for i in 0..24 {
            let s = spec.defect_sample(i);
            let mut in_mask = 0usize;
            let mut changed_in_mask = 0usize;
            for (x, y, m) in s.mask.enumerate_pixels() {
                let changed = s.clean.get_pixel(x, y) != s.image.get_pixel(x, y);
                assert!(m.0[0] == 0 || m.0[0] == 255);
                if m.0[0] == 255 {
                    in_mask += 1;
                    changed_in_mask += changed as usize;
                } else {
                    assert!(
                        !changed,
                        "{kind:?} #{i} ({:?}) changed ({x},{y}) outside its mask",
                        s.kind
                    );
                }
            }
            assert!(in_mask > 0, "{kind:?} #{i} has an empty mask");
            assert_eq!(
                changed_in_mask, in_mask,
                "{kind:?} #{i}: mask pixels left unchanged"
            );
            // defects are local: well under half the image
            assert!(
                in_mask < 64 * 64 / 4,
                "{kind:?} #{i} mask covers {in_mask} px"
            );
        }
        // good images differ between indices and from the clean base of defect samples
        assert_ne!(spec.train_image(0), spec.train_image(1));
        assert_ne!(spec.train_image(0), spec.test_good_image(0));
    }
}

#[test]
fn synthetic_tree_reads_back_through_the_mvtec_reader() {
    let d = tmp();
    let dir = SyntheticSpec::new(SyntheticKind::Part)
        .side(32)
        .counts(5, 3, 8)
        .write(d.path())
        .unwrap();
    let ds = Dataset::mvtec(&dir).unwrap();
    assert_eq!(ds.train.len(), 5);
    assert_eq!(ds.test.iter().filter(|s| !s.is_anomalous()).count(), 3);
    assert_eq!(ds.test.iter().filter(|s| s.is_anomalous()).count(), 8);
    assert!(ds.has_masks());
    assert_eq!(
        ds.defect_types(),
        vec!["contamination", "missing", "scratch", "stain"]
    );
    let imgs = ds.load_test(32).unwrap();
    assert_eq!(imgs.len(), 11);
    let spec = SyntheticSpec::new(SyntheticKind::Part)
        .side(32)
        .counts(5, 3, 8);
    let s = spec.defect_sample(1);
    let on_disk = ds
        .test
        .iter()
        .find(|t| t.path.ends_with("test/missing/001.png"))
        .unwrap();
    assert_eq!(on_disk.load(32).unwrap(), s.image);
    assert_eq!(on_disk.load_mask(32).unwrap().unwrap(), s.mask);
}

fn shared_data(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(rel);
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("skipping: {} not found", p.display());
        None
    }
}

#[test]
fn real_mvtec_bottle_counts() {
    let Some(root) = shared_data("mvtec/bottle") else {
        return;
    };
    let ds = Dataset::mvtec(&root).unwrap();
    assert_eq!(ds.train.len(), 209);
    assert_eq!(ds.test.iter().filter(|s| !s.is_anomalous()).count(), 20);
    assert_eq!(ds.test.iter().filter(|s| s.is_anomalous()).count(), 63);
    assert_eq!(ds.test.iter().filter(|s| s.mask.is_some()).count(), 63);
    assert_eq!(
        ds.defect_types(),
        vec!["broken_large", "broken_small", "contamination"]
    );
    let img = ds.test[25].load(64).unwrap();
    assert_eq!(img.dimensions(), (64, 64));
}

#[test]
fn real_elpv_is_image_level_only() {
    let Some(root) = shared_data("elpv/mono") else {
        return;
    };
    assert!(matches!(
        Dataset::mvtec(&root),
        Err(Error::MissingMask { .. })
    ));
    let ds = Dataset::mvtec_with(
        &root,
        MvtecOptions {
            allow_missing_masks: true,
        },
    )
    .unwrap();
    assert_eq!(ds.train.len(), 470);
    assert_eq!(ds.test.len(), 118 + 313);
    assert!(!ds.has_masks());
}
