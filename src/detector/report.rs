//! The evaluation [`Report`]: image-level (and, with a localizer, pixel-level) metrics, the score of
//! every test image, timings and the run's parameters.
use super::Calibration;
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
    /// How that threshold was set (absent for detectors saved before calibration records).
    #[serde(default)]
    pub calibration: Option<Calibration>,
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

/// Error rates of a threshold on a labelled test set (scores above it are flagged anomalous).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ErrorRates {
    /// The threshold.
    pub threshold: f32,
    /// Good images flagged anomalous.
    pub false_positives: usize,
    /// Good images.
    pub good: usize,
    /// Defective images not flagged.
    pub false_negatives: usize,
    /// Defective images.
    pub defective: usize,
}

impl ErrorRates {
    /// False positives / good images (NaN without good images).
    pub fn false_positive_rate(&self) -> f64 {
        self.false_positives as f64 / self.good as f64
    }

    /// False negatives / defective images (NaN without defective images).
    pub fn false_negative_rate(&self) -> f64 {
        self.false_negatives as f64 / self.defective as f64
    }

    /// One line, e.g. `false-positive rate 2.5 % (1 of 40 good images flagged), false-negative
    /// rate 11.6 % (5 of 43 defective images missed)`.
    pub fn summary(&self) -> String {
        format!(
            "false-positive rate {:.1} % ({} of {} good images flagged), false-negative rate              {:.1} % ({} of {} defective images missed)",
            100.0 * self.false_positive_rate(),
            self.false_positives,
            self.good,
            100.0 * self.false_negative_rate(),
            self.false_negatives,
            self.defective
        )
    }
}

impl Report {
    /// False-positive and false-negative counts at `threshold` (scores above it are anomalous).
    pub fn error_rates(&self, threshold: f32) -> ErrorRates {
        let mut r = ErrorRates {
            threshold,
            false_positives: 0,
            good: 0,
            false_negatives: 0,
            defective: 0,
        };
        for s in &self.samples {
            let flagged = s.score > threshold;
            if s.anomalous {
                r.defective += 1;
                r.false_negatives += usize::from(!flagged);
            } else {
                r.good += 1;
                r.false_positives += usize::from(flagged);
            }
        }
        r
    }

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
            "| F1-max (threshold) | {:.3} ({:.4}) |\n",
            self.f1_max, self.f1_threshold
        );
        if let (Some(t), Some(c)) = (self.threshold, &self.calibration) {
            s += &format!("| detector threshold | {t:.4} ({}) |\n", c.summary());
        }
        s += &format!(
            "| fit | {:.1} s |\n| score | {:.1} ms/image |\n",
            self.fit_seconds, self.score_ms_per_image
        );
        s
    }
}
