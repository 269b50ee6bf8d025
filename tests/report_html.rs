//! The HTML report (feature `html`): structure, referenced files, gallery marks, malformed inputs,
//! the embedding map of a tiny real detector, and (ignored by default, run by `.ci/run`) a
//! screenshot in headless Chromium.
#![cfg(feature = "html")]
use cutpaste::detector::{Report, ScoredSample};
use cutpaste::embedding::{EmbeddingGroup, EmbeddingMap};
use image::{GrayImage, Luma, Rgb, RgbImage};
use ndarray::Array2;
use std::path::{Path, PathBuf};

/// Options of the hand-built report.
#[derive(Clone, Copy)]
struct Fixture {
    good: usize,
    defect: usize,
    masks: bool,
    overlays: bool,
    threshold: Option<f32>,
}

const FULL: Fixture = Fixture {
    good: 6,
    defect: 6,
    masks: true,
    overlays: true,
    threshold: Some(0.5),
};

/// Good scores 0.05, 0.10, …, except the last good image at 0.7 (a false positive at 0.5);
/// defect scores 0.55, 0.60, …, except the first defect at 0.3 (a false negative).
fn good_score(i: usize, n: usize) -> f32 {
    if i + 1 == n {
        0.7
    } else {
        0.05 * (i + 1) as f32
    }
}

fn defect_score(i: usize) -> f32 {
    if i == 0 {
        0.3
    } else {
        0.55 + 0.05 * i as f32
    }
}

fn save<P: image::PixelWithColorType, C>(img: &image::ImageBuffer<P, C>, path: &Path) -> PathBuf
where
    [P::Subpixel]: image::EncodableLayout,
    C: std::ops::Deref<Target = [P::Subpixel]>,
{
    img.save(path).unwrap();
    path.to_path_buf()
}

/// A report over synthetic images written to `src`; the first image is 300×200 (thumbnailed).
fn fixture(src: &Path, f: Fixture) -> Report {
    std::fs::create_dir_all(src).unwrap();
    let mut samples = Vec::new();
    for i in 0..f.good + f.defect {
        let anomalous = i >= f.good;
        let (w, h) = if i == 0 { (300, 200) } else { (64, 64) };
        let img = RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 3) as u8, (y * 3) as u8, 40 + 10 * i as u8])
        });
        let path = save(&img, &src.join(format!("img_{i:02}.png")));
        let mask = (anomalous && f.masks).then(|| {
            let m = GrayImage::from_fn(w, h, |x, y| {
                Luma([if (20..40).contains(&x) && (20..40).contains(&y) {
                    255
                } else {
                    0
                }])
            });
            save(&m, &src.join(format!("img_{i:02}_mask.png")))
        });
        let overlay = f.overlays.then(|| {
            let o = RgbImage::from_fn(w, h, |x, _| Rgb([200, (x * 2) as u8, 30]));
            save(&o, &src.join(format!("img_{i:02}_overlay.png")))
        });
        let score = if anomalous {
            defect_score(i - f.good)
        } else {
            good_score(i, f.good)
        };
        samples.push(ScoredSample {
            path,
            defect_type: if !anomalous {
                "good".into()
            } else if i % 2 == 0 {
                "scratch".into()
            } else {
                "hole & <stain>".into()
            },
            anomalous,
            mask,
            score,
            overlay,
        });
    }
    Report {
        category: "bottle <&> co".into(),
        image_auroc: 0.9,
        per_type_auroc: vec![("hole & <stain>".into(), 0.9), ("scratch".into(), 0.9)],
        f1_max: 0.9,
        f1_threshold: 0.55,
        threshold: f.threshold,
        calibration: None,
        pixel_auroc: (f.masks && f.overlays).then_some(0.95),
        aupro: (f.masks && f.overlays).then_some(0.85),
        n_train: 10,
        n_test: f.good + f.defect,
        fit_seconds: 1.5,
        score_ms_per_image: 2.0,
        crate_version: "0.1.0".into(),
        run: serde_json::json!({"seed": 3, "note": "</pre><script>"}),
        samples,
    }
}

/// A map from synthetic features: three groups around different directions.
fn synthetic_map() -> EmbeddingMap {
    let f = |shift: usize| {
        Array2::from_shape_fn((8, 16), |(i, j)| {
            if j % 4 == shift {
                5.0 + (i % 3) as f32
            } else {
                ((i * j) % 5) as f32 * 0.1
            }
        })
    };
    let (a, b, c) = (f(0), f(1), f(2));
    EmbeddingMap::from_features(
        &[
            (EmbeddingGroup::TrainNormal, a.view()),
            (EmbeddingGroup::CutPaste, b.view()),
            (EmbeddingGroup::TestDefect, c.view()),
        ],
        5,
    )
    .unwrap()
}

/// Every `src="…"` of the page.
fn sources(html: &str) -> Vec<String> {
    html.split("src=\"")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].to_string())
        .collect()
}

/// The `<tr class="sample …">…</tr>` rows of the gallery.
fn rows(html: &str) -> Vec<String> {
    html.split("<tr class=\"sample")
        .skip(1)
        .map(|s| s[..s.find("</tr>").unwrap()].to_string())
        .collect()
}

fn attr(row: &str, name: &str) -> String {
    let key = format!("{name}=\"");
    let s = &row[row.find(&key).unwrap() + key.len()..];
    s[..s.find('"').unwrap()].to_string()
}

/// Fraction of pixels that are not (near) white.
fn ink(img: &RgbImage) -> f64 {
    img.pixels()
        .filter(|p| p.0.iter().any(|c| *c < 235))
        .count() as f64
        / (img.width() * img.height()) as f64
}

/// Checks every referenced file exists and decodes, and that the page needs no network.
fn check_references(dir: &Path, html: &str) {
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "page refers to the network"
    );
    assert!(
        !html.contains("<script"),
        "no scripts expected (and run JSON must be escaped)"
    );
    for s in sources(html) {
        let p = dir.join(&s);
        assert!(p.is_file(), "{s} is referenced but missing");
        image::open(&p).unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

#[test]
fn full_report_has_every_part_and_marks_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let report = fixture(&tmp.path().join("src"), FULL);
    let dir = tmp.path().join("report");
    let out = report
        .write_html_with(&dir, Some(&synthetic_map()))
        .unwrap();
    assert!(out.notes.is_empty(), "{:?}", out.notes);
    let html = std::fs::read_to_string(&out.index).unwrap();
    check_references(&dir, &html);
    assert!(html.contains("bottle &lt;&amp;&gt; co"));
    // every written image is referenced, and the other way round
    let mut written: Vec<String> = out
        .images
        .iter()
        .map(|p| p.strip_prefix(&dir).unwrap().to_string_lossy().into_owned())
        .collect();
    let mut referenced = sources(&html);
    written.sort();
    referenced.sort();
    assert_eq!(written, referenced);
    // charts: right size, not blank
    for chart in ["roc.png", "roc_per_type.png", "scores.png", "embedding.png"] {
        let img = image::open(dir.join(chart)).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (640, 480), "{chart}");
        assert!(ink(&img) > 0.02, "{chart} looks blank");
    }
    // gallery: all samples, by decreasing score, each with image, overlay and mask cells
    let rows = rows(&html);
    assert_eq!(rows.len(), 12);
    let scores: Vec<f32> = rows
        .iter()
        .map(|r| attr(r, "data-score").parse().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    for r in &rows {
        assert_eq!(r.matches("class=\"image\"").count(), 1);
        assert_eq!(
            r.matches("class=\"overlay\"").count(),
            1,
            "row without overlay: {r}"
        );
        let mask = r.matches("class=\"mask\"").count();
        assert_eq!(mask, usize::from(attr(r, "data-anomalous") == "true"));
    }
    // exactly the good image at 0.7 is a false positive and the defect at 0.3 a false negative
    let marked = |c: &str| -> Vec<f32> {
        rows.iter()
            .filter(|r| r.starts_with(&format!(" {c}\"")))
            .map(|r| attr(r, "data-score").parse().unwrap())
            .collect()
    };
    assert_eq!(marked("fp"), vec![0.7]);
    assert_eq!(marked("fn"), vec![0.3]);
    assert_eq!(marked("tp").len() + marked("tn").len(), 10);
    // thumbnails: the 300x200 image is scaled to fit 256 px; the 64 px ones are kept
    let first = rows.iter().find(|r| r.contains("img_00.png")).unwrap();
    let thumb = image::open(dir.join(attr(
        &first[first.find("class=\"image\"").unwrap()..],
        "src",
    )))
    .unwrap();
    assert_eq!((thumb.width(), thumb.height()), (256, 171));
}

/// Writes `report` into `<tmp>/<name>`, checks its references; (dir, notes, page).
fn page_of(tmp: &Path, report: &Report, name: &str) -> (PathBuf, Vec<String>, String) {
    let dir = tmp.join(name);
    let out = report.write_html(&dir).unwrap();
    let html = std::fs::read_to_string(&out.index).unwrap();
    check_references(&dir, &html);
    (dir, out.notes, html)
}

fn has(notes: &[String], s: &str) -> bool {
    notes.iter().any(|n| n.contains(s))
}

#[test]
fn empty_test_set_draws_no_axes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    // empty test set: no chart at all, only notes
    let mut empty = fixture(&src, FULL);
    empty.samples.clear();
    empty.image_auroc = f64::NAN;
    let (dir, notes, html) = page_of(tmp.path(), &empty, "empty");
    assert!(
        has(&notes, "ROC curves: the test set is empty"),
        "{notes:?}"
    );
    assert!(has(&notes, "score histogram: the test set is empty"));
    assert!(has(&notes, "embedding map: not computed"));
    assert!(!html.contains("class=\"chart\""));
    assert!(!dir.join("roc.png").exists() && !dir.join("scores.png").exists());
    assert!(html.contains("No gallery: the test set is empty"));
}

#[test]
fn single_class_has_no_roc() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    // a single class: histogram yes, ROC no (with the reason), no F1 threshold to mark
    let only_good = fixture(
        &src,
        Fixture {
            defect: 0,
            threshold: None,
            ..FULL
        },
    );
    let (dir, notes, html) = page_of(tmp.path(), &only_good, "single");
    assert!(has(&notes, "only good images (6)"), "{notes:?}");
    assert!(!dir.join("roc.png").exists() && dir.join("scores.png").exists());
    assert!(html.contains("No threshold: false positives and negatives are not marked"));
    assert!(!html.contains("image AUROC</th><td>90.0"));
}

#[test]
fn no_masks_no_heatmaps_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    // no masks, no heatmaps: image | note per row, and both absences named
    let bare = fixture(
        &src,
        Fixture {
            masks: false,
            overlays: false,
            ..FULL
        },
    );
    let (_, notes, html) = page_of(tmp.path(), &bare, "bare");
    assert!(
        has(&notes, "no heatmaps: the detector has no localizer"),
        "{notes:?}"
    );
    assert!(has(&notes, "no ground-truth masks"));
    assert!(has(
        &notes,
        "pixel-level metrics: this category has no ground-truth masks"
    ));
    let rows = rows(&html);
    assert_eq!(rows.len(), 12);
    assert!(rows
        .iter()
        .all(|r| !r.contains("class=\"overlay\"") && !r.contains("class=\"mask\"")));
    assert!(rows
        .iter()
        .filter(|r| attr(r, "data-anomalous") == "true")
        .all(|r| r.contains("no mask")));
}

#[test]
fn non_finite_scores_and_unreadable_images_are_noted() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    // a non-finite score and an unreadable image: left out / noted, not a failure
    let mut odd = fixture(&src, FULL);
    odd.samples[1].score = f32::NAN;
    odd.samples[2].path = src.join("does_not_exist.png");
    let (_, notes, html) = page_of(tmp.path(), &odd, "odd");
    assert!(
        has(&notes, "1 test image(s) with a non-finite score"),
        "{notes:?}"
    );
    assert_eq!(self::rows(&html).len(), 11);
    assert!(html.contains("cannot read"));
}

#[test]
fn unwritable_dir_is_an_io_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a_file");
    std::fs::write(&file, "x").unwrap();
    let report = fixture(&tmp.path().join("src"), FULL);
    assert!(matches!(
        report.write_html(file.join("report")),
        Err(cutpaste::Error::Io { .. })
    ));
}

/// `chromium` (or `chromium-browser`) on the PATH, installing Debian's `chromium` package with
/// apt-get when missing (through `sudo` when not root).
fn chromium() -> PathBuf {
    let find = || {
        ["chromium", "chromium-browser"].iter().find_map(|name| {
            let out = std::process::Command::new("sh")
                .args(["-c", &format!("command -v {name}")])
                .output()
                .ok()?;
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
        })
    };
    if let Some(p) = find() {
        return p;
    }
    eprintln!("report_html: chromium not found, installing Debian's chromium with apt-get");
    let script = r#"set -e
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null"#;
    let status = std::process::Command::new("sh")
        .args(["-c", script])
        .status()
        .expect("running apt-get");
    assert!(status.success(), "installing chromium failed: {status}");
    find().expect("chromium installed but not on the PATH")
}

/// Renders the full report in headless Chromium, screenshots it, and checks the picture: the
/// expected size, not blank, and the charts' colours present (images really loaded). The
/// report and `screenshot.png` stay in `target/tmp/report_html_browser/` for a look.
#[test]
#[ignore = "needs Chromium (installed on demand); run by .ci/run"]
fn renders_in_headless_chromium() {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report_html_browser");
    let _ = std::fs::remove_dir_all(&out);
    let report = fixture(&out.join("src"), FULL);
    let written = report
        .write_html_with(out.join("report"), Some(&synthetic_map()))
        .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let shot = out.join("screenshot.png");
    let (w, h) = (1280u32, 1800u32);
    let url = format!("file://{}", written.index.canonicalize().unwrap().display());
    let status = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size={w},{h}"))
        .arg("--virtual-time-budget=5000")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("running chromium");
    assert!(status.success(), "chromium failed: {status}");
    let img = image::open(&shot)
        .expect("chromium wrote no screenshot")
        .to_rgb8();
    assert_eq!(img.dimensions(), (w, h));
    assert!(
        ink(&img) > 0.05,
        "the page looks blank ({:.3} ink)",
        ink(&img)
    );
    let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(
        colours.len() > 100,
        "only {} colours: blank or unstyled page",
        colours.len()
    );
    // the ROC curves' blue and orange lines are drawn only if the chart PNGs loaded
    let near = |c: [u8; 3]| {
        img.pixels()
            .filter(|p| p.0.iter().zip(c).all(|(a, b)| a.abs_diff(b) < 30))
            .count()
    };
    assert!(near([0, 114, 178]) > 300, "no ROC curve visible");
    assert!(near([213, 94, 0]) > 300, "no per-type ROC curve visible");
    eprintln!("report_html: screenshot at {}", shot.display());
}
