//! `cutpaste eval`: score an MVTec-layout test set and write report.json / report.md.
use crate::options::{open_mvtec, parse_device};
use crate::Outcome;
use cutpaste::prelude::*;
use std::path::PathBuf;

/// Evaluate a saved detector on a labelled test set.
#[derive(clap::Args)]
pub(crate) struct EvalArgs {
    /// A detector written by `cutpaste train`.
    model: PathBuf,
    /// An MVTec-layout category folder (`test/good`, `test/<defect>`, `ground_truth/<defect>`).
    data: PathBuf,
    /// Folder for report.json and report.md (created; existing reports there are replaced).
    #[arg(long, default_value = "out/eval")]
    out: PathBuf,
    /// Accept defect images without ground-truth masks (image-level metrics only).
    #[arg(long)]
    image_level_only: bool,
    /// Write a heatmap overlay per test image here (the patch localizer's map when the detector
    /// was trained with --localize, else GradCAM); the HTML report's gallery shows them.
    #[arg(long)]
    heatmaps: Option<PathBuf>,
    /// Also write an HTML report (index.html + PNGs: ROC curves, score histogram, gallery,
    /// t-SNE map of embeddings) into this folder.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Images per group (train, CutPaste views, Scar views, test good, test defect) in the
    /// report's embedding map; 0 leaves the map out.
    #[arg(long, default_value_t = 40)]
    embedding_per_group: usize,
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: Device,
}

pub(crate) fn run(a: EvalArgs) -> Result<Outcome, Box<dyn std::error::Error>> {
    let detector = Detector::load(&a.model, a.device)?;
    let data = open_mvtec(&a.data, a.image_level_only)?;
    let bar = crate::progress::bar(data.test.len() as u64, "scoring");
    let mut report = detector.evaluate(&data)?;
    bar.finish_and_clear();
    if let Some(name) = a.data.file_name() {
        report.category = name.to_string_lossy().into_owned();
    }
    if let Some(dir) = &a.heatmaps {
        crate::heatmaps::write(&detector, &mut report, dir)?;
    }
    std::fs::create_dir_all(&a.out).map_err(|e| cutpaste::Error::io(&a.out, e))?;
    let write = |name: &str, text: String| -> cutpaste::Result<()> {
        let path = a.out.join(name);
        cutpaste::atomic_file::write_atomic(&path, text.as_bytes())
    };
    write("report.json", report.to_json())?;
    write("report.md", report.to_markdown())?;
    print!("{}", report.to_markdown());
    match detector.threshold() {
        Some(t) => {
            let rates = report.error_rates(t);
            println!(
                "at the detector's threshold {t:.4}: {}; {} of {} test images misclassified",
                rates.summary(),
                rates.false_positives + rates.false_negatives,
                report.n_test
            );
        }
        None => println!("the detector has no threshold: no false-positive/negative rates"),
    }
    eprintln!("wrote report.json and report.md to {}", a.out.display());
    if let Some(dir) = &a.report {
        let map = match a.embedding_per_group {
            0 => None,
            n => Some(cutpaste::embedding::embedding_map(&detector, &data, 0, n)?),
        };
        let html = report.write_html_with(dir, map.as_ref())?;
        for note in &html.notes {
            eprintln!("report note: {note}");
        }
        eprintln!("wrote {}", html.index.display());
    }
    Ok(Outcome::Ok)
}
