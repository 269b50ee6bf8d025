//! `cutpaste eval --heatmaps DIR`: one overlay PNG per test image, on one shared colour scale.
use cutpaste::heatmap::{AnomalyMap, MapRange, OverlayOptions};
use cutpaste::prelude::*;
use std::path::Path;

/// The patch localizer's map when the detector has one, else GradCAM on the image model.
fn map_of(detector: &Detector, image: &image::RgbImage) -> cutpaste::Result<AnomalyMap> {
    match detector.localizer() {
        Some(_) => detector.localize(image),
        None => detector.gradcam(image),
    }
}

/// Writes `<dir>/<index>_<type>_<file stem>.png` for every test sample and records the path in
/// the report. Colours share one scale (min to max over the whole test set) so good and
/// defective images compare; the outline marks the map above the mean of the per-image maxima
/// of good images when there are any.
pub(crate) fn write(
    detector: &Detector,
    report: &mut Report,
    dir: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir).map_err(|e| cutpaste::Error::io(dir, e))?;
    let kind = if detector.localizer().is_some() {
        "patch localizer"
    } else {
        "GradCAM"
    };
    let bar = crate::progress::bar(report.samples.len() as u64, "heatmaps");
    let mut maps = Vec::with_capacity(report.samples.len());
    for s in &report.samples {
        let image = cutpaste::data::load_rgb(&s.path)?;
        maps.push((map_of(detector, &image)?, image));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let lo = maps
        .iter()
        .flat_map(|(m, _)| m.view().iter().copied().reduce(f32::min))
        .reduce(f32::min);
    let hi = maps.iter().map(|(m, _)| m.max().0).reduce(f32::max);
    let good_max: Vec<f32> = report
        .samples
        .iter()
        .zip(&maps)
        .filter(|(s, _)| !s.anomalous)
        .map(|(_, (m, _))| m.max().0)
        .collect();
    let mut opts = OverlayOptions::default();
    if let (Some(lo), Some(hi)) = (lo, hi) {
        if hi > lo {
            opts = opts.range(MapRange::Fixed { lo, hi });
        }
    }
    if !good_max.is_empty() {
        opts = opts.threshold(good_max.iter().sum::<f32>() / good_max.len() as f32);
    }
    for (i, (s, (map, image))) in report.samples.iter_mut().zip(&maps).enumerate() {
        let stem = s
            .path
            .file_stem()
            .map_or("image".into(), |n| n.to_string_lossy());
        let path = dir.join(format!("{i:04}_{}_{stem}.png", s.defect_type));
        map.save_overlay(image, &opts, &path)?;
        s.overlay = Some(path);
    }
    eprintln!("wrote {} {kind} overlays to {}", maps.len(), dir.display());
    Ok(())
}
