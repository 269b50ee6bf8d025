//! The evaluation [`Report`]: image-level (and, with a localizer, pixel-level) metrics, the score of
//! every test image, timings and the run's parameters.
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One scored test image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredSample {
    /// The image file.
    pub path: PathBuf,
    /// `"good"` or the defect type.
    pub defect_type: String,
    /// Ground truth: true for defective images.
    pub anomalous: bool,
    /// The ground-truth mask file, when there is one.
    pub mask: Option<PathBuf>,
    /// Anomaly score (higher = more anomalous).
    pub score: f32,
    /// A heatmap overlay PNG written for this image, when localization wrote one.
    pub overlay: Option<PathBuf>,
}

/// Evaluation of a detector on a test set (from [`Detector::evaluate`](crate::Detector::evaluate)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Dataset name.
    pub category: String,
    /// Image AUROC (good vs all defects).
    pub image_auroc: f64,
    /// Image AUROC of good vs each defect type.
    pub per_type_auroc: Vec<(String, f64)>,
    /// Best F1 over thresholds.
    pub f1_max: f64,
    /// The threshold reaching it (scores ≥ it predicted anomalous).
    pub f1_threshold: f32,
    /// The detector's own decision threshold at evaluation time (scores > it are anomalous).
    pub threshold: Option<f32>,
    /// Pixel AUROC over all test pixels, when the detector localizes and masks exist.
    pub pixel_auroc: Option<f64>,
    /// Area under the per-region-overlap curve up to 30 % FPR, normalised (same condition).
    pub aupro: Option<f64>,
    /// Training images.
    pub n_train: usize,
    /// Test images.
    pub n_test: usize,
    /// Wall time of fit (training + density), seconds.
    pub fit_seconds: f64,
    /// Batched scoring time per test image, milliseconds.
    pub score_ms_per_image: f64,
    /// Version of this crate.
    pub crate_version: String,
    /// The detector's parameters (the checkpoint's `params` record).
    pub run: serde_json::Value,
    /// Every test image with its score, in dataset order.
    pub samples: Vec<ScoredSample>,
}

impl Report {
    /// Test scores in dataset order.
    pub fn scores(&self) -> Vec<f32> {
        self.samples.iter().map(|s| s.score).collect()
    }

    /// Ground-truth labels in dataset order (true = defective).
    pub fn labels(&self) -> Vec<bool> {
        self.samples.iter().map(|s| s.anomalous).collect()
    }

    /// JSON (pretty).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// A Markdown table.
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "| {} | value |\n|---|---|\n| image AUROC | {:.1} |\n",
            self.category,
            100.0 * self.image_auroc
        );
        for (t, a) in &self.per_type_auroc {
            s += &format!("| AUROC good vs {t} | {:.1} |\n", 100.0 * a);
        }
        if let Some(p) = self.pixel_auroc {
            s += &format!("| pixel AUROC | {:.1} |\n", 100.0 * p);
        }
        if let Some(p) = self.aupro {
            s += &format!("| AUPRO (30 % FPR) | {:.1} |\n", 100.0 * p);
        }
        s += &format!(
            "| F1-max (threshold) | {:.3} ({:.4}) |\n| fit | {:.1} s |\n| score | {:.1} ms/image |\n",
            self.f1_max, self.f1_threshold, self.fit_seconds, self.score_ms_per_image
        );
        s
    }
}
