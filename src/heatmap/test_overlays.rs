//! Overlays for a whole evaluated test set, on one shared colour scale, recorded in the
//! [`Report`] so the HTML gallery shows them.
use super::{AnomalyMap, MapRange, OverlayOptions};
use crate::detector::{Detector, Report};
use crate::error::{Error, Result};
use std::path::Path;

/// Which map [`write_test_overlays`] drew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapSource {
    /// The patch localizer ([`Detector::localize`]).
    PatchLocalizer,
    /// GradCAM of the image model ([`Detector::gradcam`]), for detectors without a localizer.
    GradCam,
}

/// The patch localizer's map when the detector has one, else GradCAM on the image model.
pub fn anomaly_map(
    detector: &Detector,
    image: &image::RgbImage,
) -> Result<(AnomalyMap, MapSource)> {
    match detector.localizer() {
        Some(_) => Ok((detector.localize(image)?, MapSource::PatchLocalizer)),
        None => Ok((detector.gradcam(image)?, MapSource::GradCam)),
    }
}

/// Writes `<dir>/<index>_<type>_<file stem>.png` for every sample of `report` (each at its
/// image's own size) and records the paths in `report.samples[..].overlay`. Colours share one
/// scale, the minimum to the maximum over the whole test set, so good and defective images
/// compare; the outline marks the map above the mean of the good images' per-image maxima (when
/// there are good images). `progress(done)` after each image. Returns the map source.
pub fn write_test_overlays(
    detector: &Detector,
    report: &mut Report,
    dir: impl AsRef<Path>,
    mut progress: impl FnMut(usize),
) -> Result<MapSource> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut source = MapSource::GradCam;
    let mut maps = Vec::with_capacity(report.samples.len());
    for (i, s) in report.samples.iter().enumerate() {
        let image = crate::data::load_rgb(&s.path)?;
        let (map, src) = anomaly_map(detector, &image)?;
        source = src;
        maps.push((map, image));
        progress(i + 1);
    }
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
    Ok(source)
}
