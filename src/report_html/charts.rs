//! The report's PNG charts, drawn with `plotters` on an RGB buffer (bitmap backend, text with the
//! embedded DejaVu Sans) and encoded with `image`.
use crate::embedding::{EmbeddingGroup, EmbeddingMap};
use crate::error::{Error, Result};
use crate::metrics::RocCurve;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::Once;

/// Chart size in pixels.
pub(super) const W: u32 = 640;
/// Chart height in pixels.
pub(super) const H: u32 = 480;

/// Series colours (Okabe–Ito, colour-blind safe).
pub(super) const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
    RGBColor(240, 228, 66),
];

/// A vertical line to draw on the histogram.
#[derive(Debug, Clone)]
pub(super) struct Marker {
    pub value: f64,
    pub label: String,
}

static FONTS: Once = Once::new();

fn register_fonts() {
    FONTS.call_once(|| {
        // The embedded font always parses; if it did not, text would be missing, not a failure.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
    });
}

/// Draws with `draw` on a white `W`×`H` canvas and writes it to `path` as PNG.
fn render<F>(path: &Path, draw: F) -> Result<()>
where
    F: FnOnce(
        &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    ) -> std::result::Result<(), String>,
{
    register_fonts();
    let mut buf = vec![255u8; (W * H * 3) as usize];
    let fail = |reason: String| {
        Error::io(
            path,
            std::io::Error::other(format!("drawing chart: {reason}")),
        )
    };
    {
        let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        draw(&root).map_err(fail)?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    let img = image::RgbImage::from_raw(W, H, buf).ok_or_else(|| fail("buffer size".into()))?;
    img.save(path).map_err(|source| Error::Image {
        path: path.to_path_buf(),
        source,
    })
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// ROC curves, one per `(label, curve)`, with the chance diagonal.
pub(super) fn roc_chart(path: &Path, title: &str, curves: &[(String, RocCurve)]) -> Result<()> {
    render(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..1f64, 0f64..1.0001f64)
            .map_err(s)?;
        chart
            .configure_mesh()
            .x_desc("false-positive rate")
            .y_desc("true-positive rate")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(s)?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3)))
            .map_err(s)?;
        for (i, (label, c)) in curves.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let pts: Vec<(f64, f64)> = c.fpr.iter().copied().zip(c.tpr.iter().copied()).collect();
            chart
                .draw_series(LineSeries::new(pts, colour.stroke_width(3)))
                .map_err(s)?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(s)
    })
}

/// Histogram bins: `BINS` equal bins over the scores (and the marker), padded by 3 %.
struct Bins {
    lo: f64,
    hi: f64,
    width: f64,
    good: Vec<usize>,
    defect: Vec<usize>,
}

const BINS: usize = 30;

impl Bins {
    fn new(good: &[f32], defect: &[f32], marker: Option<&Marker>) -> Self {
        let all = good.iter().chain(defect).map(|v| *v as f64);
        let (mut lo, mut hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        if let Some(m) = marker {
            lo = lo.min(m.value);
            hi = hi.max(m.value);
        }
        if hi <= lo {
            // one distinct value: a unit-wide range around it
            lo -= 0.5;
            hi += 0.5;
        }
        let pad = 0.03 * (hi - lo);
        let (lo, hi) = (lo - pad, hi + pad);
        let width = (hi - lo) / BINS as f64;
        let count = |v: &[f32]| {
            let mut c = vec![0usize; BINS];
            for x in v {
                let b = (((*x as f64) - lo) / width).floor() as usize;
                c[b.min(BINS - 1)] += 1;
            }
            c
        };
        Self {
            lo,
            hi,
            width,
            good: count(good),
            defect: count(defect),
        }
    }
}

/// Histogram of good and defect scores (bars side by side per bin) with `marker` drawn.
pub(super) fn histogram_chart(
    path: &Path,
    good: &[f32],
    defect: &[f32],
    marker: Option<&Marker>,
) -> Result<()> {
    let Bins {
        lo,
        hi,
        width,
        good: cg,
        defect: cd,
    } = Bins::new(good, defect, marker);
    // integer counts on the y axis, with headroom for the legend
    let top = cg.iter().chain(&cd).copied().max().unwrap_or(1).max(1);
    let ymax = (top as f64 * 1.4).ceil() as u32;
    render(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Test scores: good vs defect", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(52)
            .build_cartesian_2d(lo..hi, 0u32..ymax)
            .map_err(s)?;
        chart
            .configure_mesh()
            .x_desc("anomaly score (higher = more anomalous)")
            .y_desc("test images")
            .y_labels((ymax as usize + 1).min(11))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(s)?;
        let series = [
            (format!("good ({})", good.len()), &cg, PALETTE[0], 0.0),
            (format!("defect ({})", defect.len()), &cd, PALETTE[1], 0.5),
        ];
        for (label, counts, colour, offset) in series {
            let bars = counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(move |(b, c)| {
                    let x0 = lo + (b as f64 + offset) * width;
                    Rectangle::new(
                        [(x0, 0), (x0 + 0.5 * width, *c as u32)],
                        colour.mix(0.85).filled(),
                    )
                });
            chart
                .draw_series(bars)
                .map_err(s)?
                .label(label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 16, y + 6)], colour.filled())
                });
        }
        if let Some(m) = marker {
            let red = RGBColor(200, 0, 0);
            chart
                .draw_series(LineSeries::new(
                    [(m.value, 0), (m.value, ymax)],
                    red.stroke_width(2),
                ))
                .map_err(s)?
                .label(m.label.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], red.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(s)
    })
}

/// The t-SNE map: one colour per group.
pub(super) fn embedding_chart(path: &Path, map: &EmbeddingMap) -> Result<()> {
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for p in &map.points {
        x0 = x0.min(p.x);
        x1 = x1.max(p.x);
        y0 = y0.min(p.y);
        y1 = y1.max(p.y);
    }
    let padx = 0.05 * (x1 - x0).max(1e-9);
    let pady = 0.05 * (y1 - y0).max(1e-9);
    render(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "t-SNE of pooled features (perplexity {:.1}, seed {})",
                    map.perplexity, map.seed
                ),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(40)
            // headroom at the top for the legend
            .build_cartesian_2d(x0 - padx..x1 + padx, y0 - pady..y1 + 6.0 * pady)
            .map_err(s)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(s)?;
        for (i, g) in EmbeddingGroup::ALL.iter().enumerate() {
            let n = map.count(*g);
            if n == 0 {
                continue;
            }
            let colour = group_colour(i);
            let pts = map
                .points
                .iter()
                .filter(|p| p.group == *g)
                .map(move |p| Circle::new((p.x, p.y), 4, colour.mix(0.8).filled()));
            chart
                .draw_series(pts)
                .map_err(s)?
                .label(format!("{} ({n})", g.label()))
                .legend(move |(x, y)| Circle::new((x + 8, y), 5, colour.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(s)
    })
}

/// Colours of the embedding groups: train normal blue, CutPaste orange, Scar green, test good
/// sky blue, test defect vermilion-pink.
fn group_colour(i: usize) -> RGBColor {
    [PALETTE[0], PALETTE[4], PALETTE[2], PALETTE[5], PALETTE[3]][i % 5]
}
