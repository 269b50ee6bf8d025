//! F1-max: the best F1 score over all thresholds and the threshold that achieves it, the
//! operating point users ask for when they need a yes/no decision.
use super::roc::cumulative_counts;
use super::{check_scores, class_counts};
use crate::Result;

/// The best F1 over all thresholds (see [`f1_max`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct F1Max {
    /// The maximal F1 = 2·TP / (2·TP + FP + FN).
    pub f1: f64,
    /// Predict anomalous when **score ≥ threshold** (the threshold is one of the scores).
    pub threshold: f32,
    /// Precision TP / (TP + FP) at that threshold.
    pub precision: f64,
    /// Recall TP / (TP + FN) at that threshold.
    pub recall: f64,
}

/// F1-max over all distinct-score thresholds (`labels[i] = true`: anomalous; **higher score =
/// more anomalous**), as from `sklearn.metrics.precision_recall_curve`.
///
/// F1 values are compared exactly (rationals); when several thresholds reach the maximum, the
/// **lowest** one is returned, as `argmax` over scikit-learn's ascending thresholds does.
/// Errors as [`roc_auc`](super::roc_auc) (both classes are required).
///
/// ```
/// let best = cutpaste::metrics::f1_max(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true])?;
/// assert_eq!((best.threshold, best.precision, best.recall), (0.35, 2.0 / 3.0, 1.0));
/// assert!((best.f1 - 0.8).abs() < 1e-12);
/// # Ok::<(), cutpaste::Error>(())
/// ```
pub fn f1_max(scores: &[f32], labels: &[bool]) -> Result<F1Max> {
    check_scores(scores, labels, "f1_max")?;
    let (tps, fps, thr) = cumulative_counts(scores, labels);
    let (p, n) = (tps[tps.len() - 1], fps[fps.len() - 1]);
    class_counts(n, p, "f1_max")?;
    // F1 = 2tp / (tp + fp + P); walk thresholds descending, keep the last (lowest) maximum.
    let mut best = 0usize;
    for i in 1..tps.len() {
        let (a_num, a_den) = (tps[i] as u128, (tps[i] + fps[i] + p) as u128);
        let (b_num, b_den) = (tps[best] as u128, (tps[best] + fps[best] + p) as u128);
        if a_num * b_den >= b_num * a_den {
            best = i;
        }
    }
    let (tp, fp) = (tps[best] as f64, fps[best] as f64);
    Ok(F1Max {
        f1: 2.0 * tp / (tp + fp + p as f64),
        threshold: thr[best],
        precision: if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 },
        recall: tp / p as f64,
    })
}
