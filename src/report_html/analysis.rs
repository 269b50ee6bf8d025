//! What the report can show: usable samples, class counts, the decision threshold, ROC curves,
//! and a note for everything that is missing.
use crate::detector::{Report, ScoredSample};
use crate::metrics::{roc_curve, RocCurve};
use std::collections::BTreeMap;

/// The decision threshold drawn on the histogram and used to mark the gallery.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Decision {
    /// The threshold.
    pub value: f32,
    /// True: anomalous when score > value (the detector's rule); false: score ≥ value (F1-max).
    pub strict: bool,
    /// Where it comes from, for the page.
    pub source: &'static str,
}

impl Decision {
    /// Predicted anomalous?
    pub fn predicts(&self, score: f32) -> bool {
        if self.strict {
            score > self.value
        } else {
            score >= self.value
        }
    }

    /// `score > t` or `score ≥ t`.
    pub fn rule(&self) -> String {
        format!(
            "score {} {:.4}",
            if self.strict { ">" } else { "≥" },
            self.value
        )
    }
}

/// Outcome of one sample at the decision threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    TruePositive,
    FalsePositive,
    TrueNegative,
    FalseNegative,
}

impl Outcome {
    pub fn of(anomalous: bool, predicted: bool) -> Self {
        match (anomalous, predicted) {
            (true, true) => Outcome::TruePositive,
            (false, true) => Outcome::FalsePositive,
            (false, false) => Outcome::TrueNegative,
            (true, false) => Outcome::FalseNegative,
        }
    }

    /// CSS class and label.
    pub fn tag(self) -> (&'static str, &'static str) {
        match self {
            Outcome::TruePositive => ("tp", "true positive"),
            Outcome::FalsePositive => ("fp", "FALSE POSITIVE"),
            Outcome::TrueNegative => ("tn", "true negative"),
            Outcome::FalseNegative => ("fn", "FALSE NEGATIVE"),
        }
    }
}

/// The report, checked.
#[derive(Debug)]
pub(super) struct Analysis<'a> {
    /// Samples with a finite score.
    pub samples: Vec<&'a ScoredSample>,
    /// Samples dropped for a non-finite score.
    pub non_finite: usize,
    /// Good samples among `samples`.
    pub n_good: usize,
    /// Defect samples among `samples`.
    pub n_defect: usize,
    /// The threshold, when there is one.
    pub decision: Option<Decision>,
    /// Why the image-level curves cannot be drawn, when they cannot.
    pub why_no_roc: Option<String>,
}

impl<'a> Analysis<'a> {
    pub fn of(report: &'a Report) -> Self {
        let samples: Vec<&ScoredSample> = report
            .samples
            .iter()
            .filter(|s| s.score.is_finite())
            .collect();
        let non_finite = report.samples.len() - samples.len();
        let n_defect = samples.iter().filter(|s| s.anomalous).count();
        let n_good = samples.len() - n_defect;
        let why_no_roc = match (n_good, n_defect) {
            (0, 0) => Some("the test set is empty (no scored test images)".to_string()),
            (_, 0) => Some(format!(
                "the test set has only good images ({n_good}); ROC curves need defect images too"
            )),
            (0, _) => Some(format!(
                "the test set has only defect images ({n_defect}); ROC curves need good images too"
            )),
            _ => None,
        };
        let decision = match report.threshold {
            Some(t) if t.is_finite() => Some(Decision {
                value: t,
                strict: true,
                source: "the detector's threshold",
            }),
            _ if why_no_roc.is_none() && report.f1_threshold.is_finite() => Some(Decision {
                value: report.f1_threshold,
                strict: false,
                source: "the F1-max threshold on the test set (the detector has no threshold set)",
            }),
            _ => None,
        };
        Self {
            samples,
            non_finite,
            n_good,
            n_defect,
            decision,
            why_no_roc,
        }
    }

    fn scores_labels(&self, keep: impl Fn(&ScoredSample) -> bool) -> (Vec<f32>, Vec<bool>) {
        self.samples
            .iter()
            .filter(|s| keep(s))
            .map(|s| (s.score, s.anomalous))
            .unzip()
    }

    /// The image-level ROC (good vs all defects), when both classes are present.
    pub fn image_roc(&self) -> Option<RocCurve> {
        if self.why_no_roc.is_some() {
            return None;
        }
        let (s, l) = self.scores_labels(|_| true);
        roc_curve(&s, &l).ok()
    }

    /// Good vs each defect type, sorted by type.
    pub fn per_type_roc(&self) -> Vec<(String, RocCurve)> {
        if self.why_no_roc.is_some() {
            return Vec::new();
        }
        let mut types: BTreeMap<&str, ()> = BTreeMap::new();
        for s in self.samples.iter().filter(|s| s.anomalous) {
            types.insert(&s.defect_type, ());
        }
        types
            .keys()
            .filter_map(|t| {
                let (s, l) = self.scores_labels(|x| !x.anomalous || x.defect_type == *t);
                roc_curve(&s, &l).ok().map(|c| (t.to_string(), c))
            })
            .collect()
    }

    /// Scores of good and of defect samples.
    pub fn scores_by_class(&self) -> (Vec<f32>, Vec<f32>) {
        let good = self
            .samples
            .iter()
            .filter(|s| !s.anomalous)
            .map(|s| s.score)
            .collect();
        let bad = self
            .samples
            .iter()
            .filter(|s| s.anomalous)
            .map(|s| s.score)
            .collect();
        (good, bad)
    }

    /// True when any defect sample has a mask file.
    pub fn has_masks(&self) -> bool {
        self.samples.iter().any(|s| s.mask.is_some())
    }

    /// True when any sample has a heatmap overlay.
    pub fn has_overlays(&self) -> bool {
        self.samples.iter().any(|s| s.overlay.is_some())
    }

    /// Why pixel metrics are absent (`None` when both are present).
    pub fn why_no_pixel(&self, report: &Report) -> Option<String> {
        if report.pixel_auroc.is_some() && report.aupro.is_some() {
            return None;
        }
        Some(if self.samples.is_empty() {
            "the test set is empty".to_string()
        } else if !self.has_masks() {
            "this category has no ground-truth masks (image-level labels only)".to_string()
        } else if !self.has_overlays() {
            "the detector has no localizer (no anomaly maps were computed)".to_string()
        } else {
            "the evaluation did not compute pixel metrics".to_string()
        })
    }
}
