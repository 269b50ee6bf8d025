//! The gallery: test images sorted by score (highest first), each as image | heatmap overlay |
//! ground-truth mask thumbnails copied into `<dir>/gallery/`, false positives and false
//! negatives at the decision threshold marked.
use super::analysis::{Analysis, Outcome};
use super::page::esc;
use crate::detector::ScoredSample;
use crate::error::{Error, Result};
use image::imageops::FilterType;
use image::{DynamicImage, GenericImageView};
use std::path::{Path, PathBuf};

/// Longest side of a thumbnail.
pub const THUMB_SIDE: u32 = 256;
/// At most this many gallery rows (the highest scores).
pub const MAX_ROWS: usize = 500;

/// Kind of thumbnail.
#[derive(Clone, Copy)]
enum Kind {
    Image,
    Overlay,
    Mask,
}

/// Writes a thumbnail of `src` (longest side ≤ [`THUMB_SIDE`]) to `dst`; masks are binarised
/// (any non-zero → white) and resized with nearest-neighbour sampling.
fn thumbnail(src: &Path, dst: &Path, kind: Kind) -> std::result::Result<(), String> {
    let img = image::open(src).map_err(|e| format!("cannot read {}: {e}", src.display()))?;
    let (w, h) = img.dimensions();
    let scale = (THUMB_SIDE as f64 / w.max(h).max(1) as f64).min(1.0);
    let (tw, th) = (
        ((w as f64 * scale).round() as u32).max(1),
        ((h as f64 * scale).round() as u32).max(1),
    );
    let out = match kind {
        Kind::Mask => {
            let mut m = img.to_luma8();
            m.pixels_mut()
                .for_each(|p| p.0[0] = if p.0[0] > 0 { 255 } else { 0 });
            DynamicImage::ImageLuma8(image::imageops::resize(&m, tw, th, FilterType::Nearest))
        }
        _ => DynamicImage::ImageRgb8(image::imageops::resize(
            &img.to_rgb8(),
            tw,
            th,
            FilterType::Triangle,
        )),
    };
    out.save(dst)
        .map_err(|e| format!("cannot write {}: {e}", dst.display()))
}

/// One cell: an `<img>` of the thumbnail, or a note saying why there is none.
fn cell(
    dir: &Path,
    rank: usize,
    src: Option<&Path>,
    kind: Kind,
    missing: &str,
    files: &mut Vec<PathBuf>,
) -> String {
    let (suffix, class) = match kind {
        Kind::Image => ("image", "image"),
        Kind::Overlay => ("overlay", "overlay"),
        Kind::Mask => ("mask", "mask"),
    };
    let Some(src) = src else {
        return format!("<td><div class=\"missing\">{}</div></td>", esc(missing));
    };
    let rel = format!("gallery/{rank:04}_{suffix}.png");
    match thumbnail(src, &dir.join(&rel), kind) {
        Ok(()) => {
            files.push(dir.join(&rel));
            format!("<td><img class=\"{class}\" src=\"{rel}\" alt=\"{suffix} of rank {rank}\" loading=\"lazy\"></td>")
        }
        Err(e) => format!("<td><div class=\"missing\">{}</div></td>", esc(&e)),
    }
}

/// The gallery section's HTML; thumbnails written under `dir/gallery`, their paths pushed to
/// `files`, notes about what is missing pushed to `notes`.
pub(super) fn gallery(
    dir: &Path,
    a: &Analysis,
    files: &mut Vec<PathBuf>,
    notes: &mut Vec<String>,
) -> Result<String> {
    let mut html = String::from("<section id=\"gallery\"><h2>Gallery: test images by score</h2>\n");
    if a.samples.is_empty() {
        html += "<p class=\"note\">No gallery: the test set is empty.</p></section>\n";
        return Ok(html);
    }
    let gdir = dir.join("gallery");
    std::fs::create_dir_all(&gdir).map_err(|e| Error::io(&gdir, e))?;
    let has_overlays = a.has_overlays();
    let has_masks = a.has_masks();
    if !has_overlays {
        let n = "no heatmaps: the detector has no localizer (the gallery shows image | mask)";
        html += &format!("<p class=\"note\">{}</p>\n", esc(n));
        notes.push(n.to_string());
    }
    if !has_masks {
        let n = "no ground-truth masks: this category has image-level labels only";
        html += &format!("<p class=\"note\">{}</p>\n", esc(n));
        notes.push(n.to_string());
    }
    match &a.decision {
        Some(d) => html += &format!(
            "<p>Marked at {} ({}): <span class=\"badge fp\">FALSE POSITIVE</span> good image above it, \
             <span class=\"badge fn\">FALSE NEGATIVE</span> defect image below it.</p>\n",
            esc(&d.rule()),
            esc(d.source)
        ),
        None => html += "<p class=\"note\">No threshold: false positives and negatives are not marked \
                         (the detector has no threshold and the test set lacks one of the classes).</p>\n",
    }
    let mut order: Vec<&ScoredSample> = a.samples.clone();
    order.sort_by(|x, y| y.score.total_cmp(&x.score));
    if order.len() > MAX_ROWS {
        html += &format!(
            "<p class=\"note\">Showing the {MAX_ROWS} highest scores of {}.</p>\n",
            order.len()
        );
        order.truncate(MAX_ROWS);
    }
    html += "<table class=\"gallery\"><thead><tr><th>rank</th><th>score</th><th>image</th>";
    if has_overlays {
        html += "<th>heatmap overlay</th>";
    }
    html += "<th>ground-truth mask</th></tr></thead><tbody>\n";
    for (i, s) in order.iter().enumerate() {
        html += &row(dir, i + 1, s, a, has_overlays, files);
    }
    html += "</tbody></table></section>\n";
    Ok(html)
}

/// One gallery row.
fn row(
    dir: &Path,
    rank: usize,
    s: &ScoredSample,
    a: &Analysis,
    has_overlays: bool,
    files: &mut Vec<PathBuf>,
) -> String {
    let outcome = a
        .decision
        .as_ref()
        .map(|d| Outcome::of(s.anomalous, d.predicts(s.score)));
    let (class, badge) = match outcome.map(Outcome::tag) {
        Some((c, label)) => (c, format!("<span class=\"badge {c}\">{label}</span>")),
        None => ("", String::new()),
    };
    let name = s
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut html = format!(
        "<tr class=\"sample {class}\" data-rank=\"{rank}\" data-score=\"{}\" data-anomalous=\"{}\">\
         <td>{rank}</td><td><b>{:.4}</b><br>{}<br><small>{}</small><br>{badge}</td>",
        s.score,
        s.anomalous,
        s.score,
        esc(&s.defect_type),
        esc(&name)
    );
    html += &cell(dir, rank, Some(&s.path), Kind::Image, "", files);
    if has_overlays {
        html += &cell(
            dir,
            rank,
            s.overlay.as_deref(),
            Kind::Overlay,
            "no overlay for this image",
            files,
        );
    }
    let no_mask = if s.anomalous {
        "no mask"
    } else {
        "good: no defect"
    };
    html += &cell(dir, rank, s.mask.as_deref(), Kind::Mask, no_mask, files);
    html + "</tr>\n"
}
