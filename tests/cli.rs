//! The `cutpaste` binary end to end on a tiny synthetic category (32 px, 2 steps, CPU):
//! train → eval → predict, plus the exit codes and messages of the failure paths.
use cutpaste::data::synthetic::{SyntheticKind, SyntheticSpec};
use cutpaste::prelude::{ImageScore, PatchCovariance};
use std::path::Path;
use std::process::{Command, Output};

fn cutpaste(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cutpaste"))
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("the cutpaste binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn train(data: &Path, model: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        s(data),
        "-o",
        s(model),
        "--steps",
        "2",
        "--batch-images",
        "4",
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    cutpaste(&args)
}

/// A 64² synthetic part category: 4 training, 1 good and 1 defective test image.
fn tiny_part(dir: &Path, seed: u64) -> std::path::PathBuf {
    SyntheticSpec::new(SyntheticKind::Part)
        .side(64)
        .counts(4, 1, 1)
        .seed(seed)
        .write(dir)
        .unwrap()
}

#[test]
fn localizer_heatmaps_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = SyntheticSpec::new(SyntheticKind::Part)
        .side(64)
        .counts(4, 1, 2)
        .seed(2)
        .write(dir.path())
        .unwrap();
    let model = dir.path().join("m.safetensors");
    let o = train(
        &data,
        &model,
        &[
            "--size",
            "64",
            "--localize",
            "--localizer-steps",
            "2",
            "--threshold",
            "none",
        ],
    );
    assert!(
        o.status.success(),
        "train --localize failed: {}",
        stderr(&o)
    );
    let (out, maps) = (dir.path().join("eval"), dir.path().join("maps"));
    let o = cutpaste(&[
        "eval",
        s(&model),
        s(&data),
        "--out",
        s(&out),
        "--heatmaps",
        s(&maps),
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "eval failed: {}", stderr(&o));
    assert!(stderr(&o).contains("patch localizer"), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let pixel = report["pixel_auroc"]
        .as_f64()
        .expect("pixel AUROC with a localizer");
    assert!((0.0..=1.0).contains(&pixel));
    assert_eq!(std::fs::read_dir(&maps).unwrap().count(), 3);
}

#[test]
fn train_eval_predict_session() {
    let dir = tempfile::tempdir().unwrap();
    let data = SyntheticSpec::new(SyntheticKind::Part)
        .side(32)
        .counts(6, 3, 3)
        .seed(1)
        .write(dir.path())
        .unwrap();
    let model = dir.path().join("model.safetensors");

    let o = train(&data, &model, &["--size", "32"]);
    assert!(o.status.success(), "train failed: {}", stderr(&o));
    assert!(model.is_file());
    assert!(stderr(&o).contains("threshold"), "{}", stderr(&o));

    // An existing model is never replaced without --force.
    let before = std::fs::read(&model).unwrap();
    let o = train(&data, &model, &["--size", "32", "--seed", "5"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&model).unwrap(), before);

    let out = dir.path().join("eval");
    let html = dir.path().join("html");
    let o = cutpaste(&[
        "eval",
        s(&model),
        s(&data),
        "--out",
        s(&out),
        "--device",
        "cpu",
        "--report",
        s(&html),
        "--embedding-per-group",
        "3",
        "--heatmaps",
        s(&dir.path().join("maps")),
    ]);
    assert!(o.status.success(), "eval failed: {}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["n_test"], 6);
    let auroc = report["image_auroc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&auroc));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("image AUROC"));
    // the rates at the stored threshold
    assert!(
        stdout.contains("false-positive rate") && stdout.contains("false-negative rate"),
        "{stdout}"
    );
    assert!(stdout.contains("| detector threshold |"), "{stdout}");
    let page = std::fs::read_to_string(html.join("index.html")).unwrap();
    assert!(page.contains("embedding.png") && html.join("embedding.png").is_file());
    // --heatmaps: one GradCAM overlay per test image, of the image's own size, in the report.
    for sample in report["samples"].as_array().unwrap() {
        let overlay = sample["overlay"].as_str().expect("overlay recorded");
        let src = image::image_dimensions(sample["path"].as_str().unwrap()).unwrap();
        assert_eq!(image::image_dimensions(overlay).unwrap(), src);
    }

    // predict on the test folders: one CSV row per image, scores equal to eval's.
    let csv = dir.path().join("scores.csv");
    let good = data.join("test").join("good");
    let o = cutpaste(&[
        "predict",
        s(&model),
        s(&good),
        "--csv",
        s(&csv),
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "predict failed: {}", stderr(&o));
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 3);
    for (row, sample) in rows.iter().zip(report["samples"].as_array().unwrap()) {
        let cols: Vec<&str> = row.split(',').collect();
        assert_eq!(
            Path::new(cols[0]),
            Path::new(sample["path"].as_str().unwrap())
        );
        let (a, b) = (
            cols[1].parse::<f64>().unwrap(),
            sample["score"].as_f64().unwrap(),
        );
        assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0), "{a} vs {b}");
        assert!(cols[2] == "true" || cols[2] == "false", "{row}");
    }

    // A threshold below every score flags everything: exit code 3 with --fail-on-anomaly.
    let o = cutpaste(&[
        "predict",
        s(&model),
        s(&good),
        "--threshold",
        "-1e30",
        "--fail-on-anomaly",
        "--device",
        "cpu",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(stdout.lines().filter(|l| l.contains(",true,")).count(), 3);

    // An input folder without images is an error naming it (not "0 images", exit 0).
    let empty = dir.path().join("no_images_here");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "not an image").unwrap();
    let o = cutpaste(&["predict", s(&model), s(&good), s(&empty), "--device", "cpu"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no_images_here"), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    assert!(o.stdout.is_empty());

    // An unreadable file gets an error row, the others are still scored: exit code 4.
    let bad = dir.path().join("broken.png");
    std::fs::write(&bad, b"not a png").unwrap();
    let one = good.join("000.png");
    let o = cutpaste(&["predict", s(&model), s(&bad), s(&one), "--device", "cpu"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[1].starts_with(s(&bad)) && lines[1].contains("broken.png"));
    assert!(lines[1].split(',').nth(1) == Some(""), "{}", lines[1]);
    assert!(lines[2].split(',').nth(1).unwrap().parse::<f32>().is_ok());
}

#[test]
fn usage_and_input_errors_have_distinct_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    // clap rejects a bad command line with code 2 and names the option.
    let o = cutpaste(&["train", "x", "-o", "y", "--variant", "rotation-9000"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--variant"), "{}", stderr(&o));
    // An -o in a missing folder fails before anything is read or trained (the dataset path
    // does not even exist), naming the folder.
    let o = train(
        Path::new("no/such/data"),
        &dir.path().join("no_dir/m.safetensors"),
        &["--size", "32"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no_dir") && stderr(&o).contains("does not exist"),
        "{}",
        stderr(&o)
    );
    // A budget too long for a Duration is a usage error, not a panic.
    let o = cutpaste(&[
        "train",
        "x",
        "-o",
        "y",
        "--budget",
        "99999999999999999999999999s",
    ]);
    assert!(matches!(o.status.code(), Some(1 | 2)), "{:?}", o.status);
    assert!(stderr(&o).contains("too long"), "{}", stderr(&o));
    // An empty training folder: code 1, the message names the folder.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = train(&empty, &dir.path().join("m.safetensors"), &["--size", "32"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("empty"), "{}", stderr(&o));
    // One training image: code 1 before training, with advice that works.
    let one = SyntheticSpec::new(SyntheticKind::Part)
        .side(32)
        .counts(1, 1, 1)
        .seed(1)
        .write(dir.path().join("one"))
        .unwrap();
    let o = train(&one, &dir.path().join("m1.safetensors"), &["--size", "32"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--density kde"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("trained in"), "{}", stderr(&o));
    // A model file that is not a detector: code 1, the message names it.
    let fake = dir.path().join("fake.safetensors");
    std::fs::write(&fake, b"garbage").unwrap();
    let o = cutpaste(&["predict", s(&fake), s(&empty), "--device", "cpu"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("fake.safetensors"), "{}", stderr(&o));
}

/// `--device cuda` where CUDA cannot be used: one line naming the cause and the fix, exit code 1,
/// nothing written (not libtorch's C++ message and backtrace). Skipped where a GPU is usable.
#[test]
fn cuda_that_cannot_be_used_is_one_line_with_the_cause_and_the_fix() {
    let env = cutpaste::model::CudaEnv::detect();
    if env.devices > 0 {
        eprintln!("skipped: this build and machine can use CUDA");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = SyntheticSpec::new(SyntheticKind::Part)
        .side(32)
        .counts(4, 1, 1)
        .seed(1)
        .write(dir.path())
        .unwrap();
    let model = dir.path().join("m.safetensors");
    for device in ["cuda", "cuda:1"] {
        let o = cutpaste(&[
            "train",
            s(&data),
            "-o",
            s(&model),
            "--size",
            "32",
            "--steps",
            "1",
            "--device",
            device,
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let line = one_line(&o);
        let name = if device == "cuda" { "cuda:0" } else { device };
        let want = format!("error: cannot use device {name}: ");
        assert!(line.starts_with(&want), "{line}");
        if env.compiled {
            assert!(line.contains("--device cpu") && line.contains("GPU"));
        } else {
            assert!(line.contains("without the `cuda` feature"), "{line}");
            assert!(line.contains("--features cli,cuda"), "{line}");
        }
        assert!(!model.exists(), "nothing is written");
    }
    // a CPU-trained detector loaded onto an unusable CUDA device: the same one line, naming the
    // device (not the checkpoint, which is fine)
    let o = train(&data, &model, &["--size", "32"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for cmd in ["eval", "predict"] {
        let o = cutpaste(&[cmd, s(&model), s(&data), "--device", "cuda"]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let line = one_line(&o);
        assert!(
            line.starts_with("error: cannot use device cuda:0: "),
            "{cmd}: {line}"
        );
    }
}

/// The only non-empty line of a command's stderr (fails when there are more).
fn one_line(o: &Output) -> String {
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{err}");
    lines[0].to_string()
}

#[test]
fn learning_rate_and_batch_images_reach_both_models_and_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_part(dir.path(), 3);
    let model = dir.path().join("m.safetensors");
    let o = train(
        &data,
        &model,
        &[
            "--learning-rate",
            "0.05",
            "--threshold",
            "none",
            "--holdout",
            "0",
        ],
    );
    assert!(o.status.success(), "train failed: {}", stderr(&o));
    let det = cutpaste::prelude::Detector::load(&model, tch::Device::Cpu).unwrap();
    let used = det.params_used();
    assert_eq!(used.training_config().get_learning_rate(), 0.05);
    let lp = det
        .localizer()
        .expect("the dense recipe has a localizer")
        .params();
    assert_eq!(
        lp.get_batch_images(),
        4,
        "--batch-images sets the patch model's crops per step"
    );
    // the dense recipe's defaults: diagonal patch covariances, the combined image score
    assert_eq!(lp.get_covariance(), PatchCovariance::Diagonal);
    assert_eq!(used.get_image_score(), ImageScore::Combined);
    assert!(det.score_scale().is_some());
    // and the options that change them reach the checkpoint
    let o = train(
        &data,
        &model,
        &[
            "--localizer-covariance",
            "full",
            "--image-score",
            "map",
            "--threshold",
            "none",
            "--force",
        ],
    );
    assert!(o.status.success(), "train failed: {}", stderr(&o));
    let det = cutpaste::prelude::Detector::load(&model, tch::Device::Cpu).unwrap();
    let lp = det.localizer().unwrap().params();
    assert_eq!(lp.get_covariance(), PatchCovariance::Full);
    assert_eq!(det.params_used().get_image_score(), ImageScore::Map);
    let o = train(&data, &model, &["--learning-rate", "0", "--force"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("learning_rate"), "{}", stderr(&o));
}

#[test]
fn pretrained_weights_reach_the_dense_recipes_patch_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_part(dir.path(), 4);
    // an image is not a weights file: the dense recipe must read it (and fail), not ignore it
    let not_weights = data.join("train").join("good").join("000.png");
    assert!(not_weights.is_file(), "{}", not_weights.display());
    let model = dir.path().join("m.safetensors");
    let o = train(
        &data,
        &model,
        &["--pretrained", s(&not_weights), "--threshold", "none"],
    );
    assert!(!o.status.success(), "train ignored --pretrained");
    assert!(stderr(&o).contains("000.png"), "{}", stderr(&o));
    assert!(!model.exists(), "nothing is written on failure");
}
