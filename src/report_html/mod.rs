//! A self-contained HTML evaluation report (feature `html`): [`Report::write_html`] writes one
//! `index.html` (inline style sheet, no scripts, no network) plus PNG charts and thumbnails into a
//! folder, for one evaluated category:
//!
//! - image-level ROC curve with the AUROC in the legend, and one ROC per defect type (good vs
//!   that type); pixel AUROC / AUPRO as numbers when the report has them (a pixel-level ROC
//!   *curve* is not drawn: the report does not keep per-pixel scores);
//! - a histogram of good vs defect test scores with the decision threshold drawn (the detector's
//!   threshold, else the F1-max threshold);
//! - a gallery of the test images sorted by score: image | heatmap overlay | ground-truth mask
//!   thumbnails (≤ 256 px), false positives and false negatives at the threshold marked;
//! - with [`Report::write_html_with`], a 2-D t-SNE map of pooled features (see
//!   [`crate::embedding`]);
//! - the run's parameters, timings and crate version.
//!
//! Malformed inputs (empty test set, one class only, no masks, no heatmaps, non-finite scores)
//! still give a report: the missing parts are listed at the top and in their sections instead of
//! empty axes. Charts are drawn with `plotters` (bitmap backend, embedded DejaVu Sans) and encoded
//! with `image`.
//!
//! ```no_run
//! # fn run(report: &cutpaste::Report) -> cutpaste::Result<()> {
//! let out = report.write_html("out/report")?;
//! println!("open {}", out.index.display());
//! for note in &out.notes {
//!     println!("missing: {note}");
//! }
//! # Ok(()) }
//! ```
mod analysis;
mod charts;
mod gallery;
mod page;

pub use gallery::{MAX_ROWS, THUMB_SIDE};

use crate::detector::Report;
use crate::embedding::EmbeddingMap;
use crate::error::{Error, Result};
use analysis::Analysis;
use std::path::{Path, PathBuf};

/// Chart files, relative to the report folder.
pub const ROC_PNG: &str = "roc.png";
/// Per-defect-type ROC chart.
pub const ROC_PER_TYPE_PNG: &str = "roc_per_type.png";
/// Score histogram.
pub const HISTOGRAM_PNG: &str = "scores.png";
/// t-SNE map.
pub const EMBEDDING_PNG: &str = "embedding.png";

/// What [`Report::write_html`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct HtmlReport {
    /// The page, `<dir>/index.html`.
    pub index: PathBuf,
    /// Every PNG written (charts and thumbnails).
    pub images: Vec<PathBuf>,
    /// What the report could not show and why (empty when complete).
    pub notes: Vec<String>,
}

impl Report {
    /// Writes the HTML report into `dir` (created if needed; files of a previous report there
    /// are overwritten). Same as [`write_html_with`](Self::write_html_with) without an
    /// embedding map.
    ///
    /// Errors: [`Error::Io`] / [`Error::Image`] when `dir` or a file in it cannot be written.
    /// Unreadable source images, missing masks or heatmaps are noted on the page, not errors.
    pub fn write_html(&self, dir: impl AsRef<Path>) -> Result<HtmlReport> {
        self.write_html_with(dir, None)
    }

    /// Writes the HTML report into `dir`, with the t-SNE map of `embedding` when given (from
    /// [`crate::embedding::embedding_map`]). See the [module docs](crate::report_html).
    pub fn write_html_with(
        &self,
        dir: impl AsRef<Path>,
        embedding: Option<&EmbeddingMap>,
    ) -> Result<HtmlReport> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let a = Analysis::of(self);
        let mut images = Vec::new();
        let mut notes = Vec::new();
        let mut body = String::new();
        body += &format!(
            "<section id=\"metrics\"><h2>Metrics</h2>{}</section>\n",
            page::metrics_table(self, &a)
        );
        body += &curves_section(self, &a, dir, &mut images, &mut notes)?;
        body += &embedding_section(embedding, dir, &mut images, &mut notes)?;
        body += &gallery::gallery(dir, &a, &mut images, &mut notes)?;
        body += &format!(
            "<section id=\"run\"><h2>Run</h2>{}</section>\n",
            page::run_table(self, embedding)
        );
        if a.non_finite > 0 {
            notes.push(format!(
                "{} test image(s) with a non-finite score were left out",
                a.non_finite
            ));
        }
        let missing = if notes.is_empty() {
            String::new()
        } else {
            let items: String = notes
                .iter()
                .map(|n| format!("<li>{}</li>", page::esc(n)))
                .collect();
            format!("<div class=\"missing-list\" id=\"missing\"><b>Not shown:</b><ul>{items}</ul></div>\n")
        };
        let title = format!("CutPaste evaluation: {}", page::esc(&self.category));
        let html = format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title}</title><style>{}</style></head>\n<body>\n<h1>{title}</h1>\n\
             <p>cutpaste {} — {} test images, {} training images</p>\n{missing}{body}</body></html>\n",
            page::STYLE,
            page::esc(&self.crate_version),
            self.samples.len(),
            self.n_train
        );
        let index = dir.join("index.html");
        crate::atomic_file::write_atomic(&index, html.as_bytes())?;
        Ok(HtmlReport {
            index,
            images,
            notes,
        })
    }
}

/// ROC curves and the score histogram.
fn curves_section(
    r: &Report,
    a: &Analysis,
    dir: &Path,
    images: &mut Vec<PathBuf>,
    notes: &mut Vec<String>,
) -> Result<String> {
    let mut html = String::from("<section id=\"curves\"><h2>ROC curves and scores</h2>\n");
    let mut figs = String::new();
    match a.image_roc() {
        Some(roc) => figs += &roc_figures(r, a, roc, dir, images)?,
        None => {
            let why = a.why_no_roc.clone().unwrap_or_default();
            html += &page::note(&format!("No ROC curves: {why}."));
            notes.push(format!("ROC curves: {why}"));
        }
    }
    if !a.samples.is_empty() {
        let (good, bad) = a.scores_by_class();
        let marker = a.decision.as_ref().map(|d| charts::Marker {
            value: d.value as f64,
            label: format!("threshold {:.4}", d.value),
        });
        charts::histogram_chart(&dir.join(HISTOGRAM_PNG), &good, &bad, marker.as_ref())?;
        images.push(dir.join(HISTOGRAM_PNG));
        figs += &page::figure(
            HISTOGRAM_PNG,
            "histogram of test scores",
            "Scores of good and defect test images",
        );
    } else {
        html += &page::note("No score histogram: the test set is empty.");
        notes.push("score histogram: the test set is empty".into());
    }
    if !figs.is_empty() {
        html += &format!("<div class=\"charts\">{figs}</div>\n");
    }
    match a.why_no_pixel(r) {
        Some(why) => {
            html += &page::note(&format!("Pixel level: not available: {why}."));
            notes.push(format!("pixel-level metrics: {why}"));
        }
        None => {
            html += "<p>Pixel level: see the metrics table (the pixel ROC curve is not drawn: \
                         per-pixel scores are not kept in the report).</p>\n"
        }
    }
    Ok(html + "</section>\n")
}

/// The image-level and per-defect-type ROC charts (both classes present).
fn roc_figures(
    r: &Report,
    a: &Analysis,
    roc: crate::metrics::RocCurve,
    dir: &Path,
    images: &mut Vec<PathBuf>,
) -> Result<String> {
    let mut figs = String::new();
    let label = format!("image AUROC {:.3}", roc.auc());
    charts::roc_chart(
        &dir.join(ROC_PNG),
        &format!("Image-level ROC: {}", r.category),
        &[(label, roc)],
    )?;
    images.push(dir.join(ROC_PNG));
    figs += &page::figure(
        ROC_PNG,
        "image-level ROC curve",
        "Image level: good vs all defects",
    );
    let per_type: Vec<_> = a
        .per_type_roc()
        .into_iter()
        .map(|(t, c)| (format!("{t} ({:.3})", c.auc()), c))
        .collect();
    charts::roc_chart(
        &dir.join(ROC_PER_TYPE_PNG),
        "ROC per defect type (AUROC)",
        &per_type,
    )?;
    images.push(dir.join(ROC_PER_TYPE_PNG));
    figs += &page::figure(
        ROC_PER_TYPE_PNG,
        "ROC curve per defect type",
        "Good vs each defect type",
    );
    Ok(figs)
}

/// The t-SNE map, or a note.
fn embedding_section(
    m: Option<&EmbeddingMap>,
    dir: &Path,
    images: &mut Vec<PathBuf>,
    notes: &mut Vec<String>,
) -> Result<String> {
    let mut html = String::from("<section id=\"embedding\"><h2>Embedding map</h2>\n");
    match m {
        Some(m) if !m.points.is_empty() => {
            charts::embedding_chart(&dir.join(EMBEDDING_PNG), m)?;
            images.push(dir.join(EMBEDDING_PNG));
            html += &format!(
                "<div class=\"charts\">{}</div>",
                page::figure(
                    EMBEDDING_PNG,
                    "t-SNE map of pooled features",
                    "t-SNE of L2-normalised pooled features: training normals, their CutPaste and Scar views, test good and test defect images"
                )
            );
        }
        _ => {
            let why = "not computed (pass an EmbeddingMap from cutpaste::embedding::embedding_map to Report::write_html_with)";
            html += &page::note(&format!("Embedding map {why}."));
            notes.push(format!("embedding map: {why}"));
        }
    }
    Ok(html + "</section>\n")
}
