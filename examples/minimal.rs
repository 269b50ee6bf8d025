//! The smallest complete program: generate data → fit → threshold → score, in seconds (tiny
//! sizes and 2 training steps, so the numbers mean nothing). It is the crate docs' quickstart and
//! the `src/main.rs` of `scripts/downstream_check.sh`.
//!
//! ```text
//! cargo run --example minimal
//! ```
//! Prints (on a shared 2-core CPU; the fit time varies with the load):
//! ```text
//! fitted on 12 images in 11.7 s; threshold 678.6
//! image AUROC 100.0 on 4 good + 4 defect test images
//! test/good/000.png: score 368.5, anomalous: false
//! test/contamination/003.png: score 718.0, anomalous: true
//! ```
use cutpaste::data::synthetic::{SyntheticKind, SyntheticSpec};
use cutpaste::prelude::*;

fn main() -> Result<()> {
    // An MVTec-layout category (train/good, test/<defect>, ground_truth/) generated on the fly;
    // for your own images use `Dataset::mvtec(path)` or `FolderDataset`.
    let root = std::env::temp_dir().join(format!("cutpaste-minimal-{}", std::process::id()));
    let dir = SyntheticSpec::new(SyntheticKind::Part)
        .side(32)
        .counts(16, 4, 4)
        .write(&root)?;
    let mut data = Dataset::mvtec(&dir)?;
    // Keep 4 normal images out of training, to pick the threshold on unseen images.
    let held_out = data.train.split_off(12);

    // Augment (3-way CutPaste) → train ResNet-18 → fit the Gaussian on the pooled features.
    // The paper trains 256² images for 65,536 steps; 2 steps at 32² only show the API.
    let mut detector = Detector::params()
        .image_size(32)
        .batch_images(4)
        .training(TrainParams::paper().steps(2))
        .seed(0)
        .fit(&data)?;

    // A threshold from normal images alone: the F1-max between the held-out images and their
    // CutPaste / Scar views.
    let normal = cutpaste::data::load_all(&held_out, 32)?;
    let threshold = detector.threshold_from_synthetic(&normal, 1)?;
    let secs = detector.fit_time().as_secs_f64();
    println!(
        "fitted on {} images in {secs:.1} s; threshold {threshold:.1}",
        data.train.len()
    );

    let report = detector.evaluate(&data)?;
    let n_bad = data.test.iter().filter(|s| s.is_anomalous()).count();
    println!(
        "image AUROC {:.1} on {} good + {n_bad} defect test images",
        100.0 * report.image_auroc,
        data.test.len() - n_bad,
    );

    // Scores: higher = more anomalous. One good and one defective test image:
    let good = data.test.iter().find(|s| !s.is_anomalous());
    let bad = data.test.iter().find(|s| s.is_anomalous());
    for sample in good.into_iter().chain(bad) {
        let verdict = detector.predict(&sample.load(32)?)?;
        let name = sample.path.strip_prefix(&dir).unwrap_or(&sample.path);
        println!(
            "{}: score {:.1}, anomalous: {}",
            name.display(),
            verdict.score,
            verdict.is_anomalous
        );
    }
    std::fs::remove_dir_all(&root).ok();
    Ok(())
}
