//! HTML text: escaping, the inline style sheet, the metrics and run tables.
use super::analysis::Analysis;
use crate::detector::Report;
use crate::embedding::EmbeddingMap;

/// Escapes `&`, `<`, `>`, `"` and `'` for HTML text and attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole inline style sheet (no external assets).
pub(super) const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;background:#fff}\
h1{margin:0 0 4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:32px}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}\
.charts{display:flex;flex-wrap:wrap;gap:16px}.charts figure{margin:0;flex:0 1 600px}.charts img{width:100%;border:1px solid #ddd}\
.note{background:#fff4d6;border-left:4px solid #e6a700;padding:6px 10px}\
.missing-list{background:#fff4d6;border:1px solid #e6a700;padding:8px 24px}\
.gallery img{display:block;min-width:128px;max-width:256px;max-height:256px}\
.missing{width:160px;height:60px;display:flex;align-items:center;justify-content:center;color:#777;background:#f3f3f3;font-size:13px;text-align:center}\
tr.fp td,tr.fn td{background:#ffe5e5}tr.fp img,tr.fn img{outline:4px solid #c00}\
.badge{display:inline-block;padding:1px 6px;border-radius:3px;font-size:12px;color:#fff;background:#888}\
.badge.fp,.badge.fn{background:#c00;font-weight:bold}.badge.tp{background:#2a7}.badge.tn{background:#27a}\
pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:400px}";

fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:.1} %", 100.0 * v)
    } else {
        "not available (not a number)".into()
    }
}

fn na(reason: &str) -> String {
    format!("<span class=\"na\">not available: {}</span>", esc(reason))
}

/// The metrics table.
pub(super) fn metrics_table(r: &Report, a: &Analysis) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    let image = |v: f64| match &a.why_no_roc {
        None => pct(v),
        Some(why) => na(why),
    };
    rows.push(("image AUROC".into(), image(r.image_auroc)));
    for (t, v) in &r.per_type_auroc {
        rows.push((format!("AUROC good vs {}", esc(t)), image(*v)));
    }
    rows.push((
        "F1-max (threshold)".into(),
        match &a.why_no_roc {
            None => format!("{:.3} ({:.4})", r.f1_max, r.f1_threshold),
            Some(why) => na(why),
        },
    ));
    let pixel_why = a.why_no_pixel(r).unwrap_or_default();
    rows.push((
        "pixel AUROC".into(),
        r.pixel_auroc.map(pct).unwrap_or_else(|| na(&pixel_why)),
    ));
    rows.push((
        "AUPRO (FPR ≤ 30 %)".into(),
        r.aupro.map(pct).unwrap_or_else(|| na(&pixel_why)),
    ));
    rows.push((
        "decision threshold".into(),
        match &a.decision {
            Some(d) => format!("{} — {}", esc(&d.rule()), esc(d.source)),
            None => na("the detector has no threshold and the test set lacks one of the classes"),
        },
    ));
    rows.push((
        "test images".into(),
        format!(
            "{} ({} good, {} defect)",
            r.samples.len(),
            a.n_good,
            a.n_defect
        ),
    ));
    if a.non_finite > 0 {
        rows.push((
            "non-finite scores (left out)".into(),
            a.non_finite.to_string(),
        ));
    }
    rows.push(("training images".into(), r.n_train.to_string()));
    table(&rows)
}

/// The run table: timings, version, parameters.
pub(super) fn run_table(r: &Report, embedding: Option<&EmbeddingMap>) -> String {
    let mut rows: Vec<(String, String)> = vec![
        (
            "crate".into(),
            format!("cutpaste {}", esc(&r.crate_version)),
        ),
        (
            "fit (training + density)".into(),
            format!("{:.1} s", r.fit_seconds),
        ),
        (
            "scoring".into(),
            format!("{:.2} ms / image", r.score_ms_per_image),
        ),
    ];
    if let Some(m) = embedding {
        rows.push((
            "embedding map".into(),
            format!(
                "{} points, t-SNE perplexity {:.1}, seed {}, KL {:.3}, {:.1} s",
                m.points.len(),
                m.perplexity,
                m.seed,
                m.kl_divergence,
                m.seconds
            ),
        ));
    }
    let params = serde_json::to_string_pretty(&r.run).unwrap_or_default();
    format!(
        "{}<h3>Parameters</h3><pre>{}</pre>\n",
        table(&rows),
        esc(&params)
    )
}

fn table(rows: &[(String, String)]) -> String {
    let mut s = String::from("<table class=\"kv\">\n");
    for (k, v) in rows {
        s += &format!("<tr><th>{k}</th><td>{v}</td></tr>\n");
    }
    s + "</table>\n"
}

/// A chart figure.
pub(super) fn figure(file: &str, alt: &str, caption: &str) -> String {
    format!(
        "<figure><img class=\"chart\" src=\"{file}\" alt=\"{}\"><figcaption>{}</figcaption></figure>\n",
        esc(alt),
        esc(caption)
    )
}

/// A note box.
pub(super) fn note(text: &str) -> String {
    format!("<p class=\"note\">{}</p>\n", esc(text))
}
