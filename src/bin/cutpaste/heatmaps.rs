//! `cutpaste eval --heatmaps DIR`: one overlay PNG per test image (see
//! `cutpaste::heatmap::write_test_overlays`).
use cutpaste::heatmap::{write_test_overlays, MapSource};
use cutpaste::prelude::*;
use std::path::Path;

pub(crate) fn write(detector: &Detector, report: &mut Report, dir: &Path) -> cutpaste::Result<()> {
    let bar = crate::progress::bar(report.samples.len() as u64, "heatmaps");
    let source = write_test_overlays(detector, report, dir, |done| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    let kind = match source {
        MapSource::PatchLocalizer => "patch localizer",
        MapSource::GradCam => "GradCAM",
    };
    eprintln!(
        "wrote {} {kind} overlays to {}",
        report.samples.len(),
        dir.display()
    );
    Ok(())
}
