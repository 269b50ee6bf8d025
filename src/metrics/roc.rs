//! ROC AUC and ROC curve, with ties handled exactly as `sklearn.metrics.roc_auc_score` /
//! `roc_curve` do (a tie between a normal and an anomalous sample counts one half).
//!
//! The AUC is computed exactly as the Mann–Whitney statistic in integer arithmetic:
//! AUC = (#{(a, n): s_a > s_n} + ½·#{(a, n): s_a = s_n}) / (A·N), by radix-sorting both classes
//! and merging.
use super::sort::{key, pack, radix_sort, unkey};
use super::{check_scores, class_counts, PairSource};
use crate::{Error, Result};
use std::collections::BTreeMap;

/// Points of a ROC curve, as `sklearn.metrics.roc_curve(drop_intermediate=True)` returns them:
/// the first point is (0, 0) at threshold +∞, then one point per distinct score (descending
/// thresholds; points on a straight segment dropped), the last is (1, 1).
///
/// A sample is predicted anomalous at threshold t when its score is ≥ t.
#[derive(Clone, Debug, PartialEq)]
pub struct RocCurve {
    /// False-positive rates, non-decreasing, from 0 to 1.
    pub fpr: Vec<f64>,
    /// True-positive rates, non-decreasing, from 0 to 1.
    pub tpr: Vec<f64>,
    /// Thresholds, decreasing; `thresholds[0]` is `f32::INFINITY`.
    pub thresholds: Vec<f32>,
}

impl RocCurve {
    /// Area under the curve by the trapezoidal rule (equals [`roc_auc`] up to rounding).
    pub fn auc(&self) -> f64 {
        self.fpr
            .windows(2)
            .zip(self.tpr.windows(2))
            .map(|(x, y)| (x[1] - x[0]) * (y[1] + y[0]) * 0.5)
            .sum()
    }
}

/// Image-level ROC AUC. `labels[i] = true` marks an anomalous sample; **higher score = more
/// anomalous**. Ties count ½, exactly as `sklearn.metrics.roc_auc_score`.
///
/// Errors: different lengths → [`Error::DimensionMismatch`]; no samples →
/// [`Error::EmptyDataset`]; NaN/inf → [`Error::NonFinite`] (row = index); only one class →
/// [`Error::SingleClass`].
///
/// ```
/// let auc = cutpaste::metrics::roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true])?;
/// assert_eq!(auc, 0.75);
/// # Ok::<(), cutpaste::Error>(())
/// ```
pub fn roc_auc(scores: &[f32], labels: &[bool]) -> Result<f64> {
    check_scores(scores, labels, "roc_auc")?;
    auc_pairs(&(scores, labels), "roc_auc")
}

/// Exact AUC over the (score, is-anomalous) pairs of `pairs` (scores already checked finite):
/// both classes' keys are radix-sorted, then merged. Memory: 4 B per pair plus the sort's
/// scratch copy of the larger class.
pub(crate) fn auc_pairs(pairs: &impl PairSource, what: &str) -> Result<f64> {
    let (mut n, mut n_pos) = (0usize, 0usize);
    pairs.for_each(|_, l| {
        n += 1;
        n_pos += usize::from(l);
    });
    class_counts(n - n_pos, n_pos, what)?;
    let (mut neg, mut pos) = (Vec::with_capacity(n - n_pos), Vec::with_capacity(n_pos));
    pairs.for_each(|s, l| {
        if l {
            pos.push(key(s))
        } else {
            neg.push(key(s))
        }
    });
    radix_sort(&mut neg);
    radix_sort(&mut pos);
    Ok(auc_sorted(&neg, &pos))
}

/// Exact AUC from ascending-sorted normal (`neg`) and anomalous (`pos`) keys; both non-empty.
fn auc_sorted(neg: &[u32], pos: &[u32]) -> f64 {
    let (mut lo, mut hi, mut i) = (0usize, 0usize, 0usize);
    let mut twice: u128 = 0; // 2·#(pos > neg) + #(pos = neg)
    while i < pos.len() {
        let k = pos[i];
        let mut j = i;
        while j < pos.len() && pos[j] == k {
            j += 1;
        }
        while lo < neg.len() && neg[lo] < k {
            lo += 1;
        }
        hi = hi.max(lo);
        while hi < neg.len() && neg[hi] <= k {
            hi += 1;
        }
        twice += (j - i) as u128 * (lo + hi) as u128; // 2·lo + (hi − lo)
        i = j;
    }
    twice as f64 / (2.0 * neg.len() as f64 * pos.len() as f64)
}

/// ROC curve points for plots (see [`RocCurve`]); same inputs and errors as [`roc_auc`].
pub fn roc_curve(scores: &[f32], labels: &[bool]) -> Result<RocCurve> {
    check_scores(scores, labels, "roc_curve")?;
    let (tps, fps, thr) = cumulative_counts(scores, labels);
    let (n_pos, n_neg) = (tps[tps.len() - 1], fps[fps.len() - 1]);
    class_counts(n_neg, n_pos, "roc_curve")?;
    // scikit-learn's drop_intermediate: keep the ends and every point where the curve bends
    let m = tps.len();
    let keep: Vec<usize> = (0..m)
        .filter(|&i| {
            m <= 2
                || i == 0
                || i == m - 1
                || fps[i + 1] + fps[i - 1] != 2 * fps[i]
                || tps[i + 1] + tps[i - 1] != 2 * tps[i]
        })
        .collect();
    let mut curve = RocCurve {
        fpr: vec![0.0],
        tpr: vec![0.0],
        thresholds: vec![f32::INFINITY],
    };
    for i in keep {
        curve.fpr.push(fps[i] as f64 / n_neg as f64);
        curve.tpr.push(tps[i] as f64 / n_pos as f64);
        curve.thresholds.push(thr[i]);
    }
    Ok(curve)
}

/// For every distinct score, descending: (#anomalous ≥ it, #normal ≥ it, the score).
pub(crate) fn cumulative_counts(
    scores: &[f32],
    labels: &[bool],
) -> (Vec<usize>, Vec<usize>, Vec<f32>) {
    let mut packs: Vec<u64> = scores
        .iter()
        .zip(labels)
        .map(|(&s, &l)| pack(key(s), u32::from(l)))
        .collect();
    radix_sort(&mut packs);
    let (mut tps, mut fps, mut thr) = (Vec::new(), Vec::new(), Vec::new());
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = packs.len();
    while i > 0 {
        let k = (packs[i - 1] >> 32) as u32;
        while i > 0 && (packs[i - 1] >> 32) as u32 == k {
            if packs[i - 1] & 1 == 1 {
                tp += 1;
            } else {
                fp += 1;
            }
            i -= 1;
        }
        tps.push(tp);
        fps.push(fp);
        thr.push(unkey(k));
    }
    (tps, fps, thr)
}

/// Image AUROC of the normal samples against each defect type separately.
///
/// `types[i]` names the defect type of sample i (e.g. the MVTec folder name); it is ignored for
/// normal samples (`labels[i] = false`). Returns `(type, AUROC)` for every type that has at least
/// one anomalous sample, sorted by type name. Errors as [`roc_auc`]; different lengths of
/// `types` → [`Error::DimensionMismatch`].
pub fn per_type_auroc<S: AsRef<str>>(
    scores: &[f32],
    labels: &[bool],
    types: &[S],
) -> Result<Vec<(String, f64)>> {
    check_scores(scores, labels, "per_type_auroc")?;
    if types.len() != scores.len() {
        return Err(Error::DimensionMismatch {
            what: "per_type_auroc: number of defect types (one per score)".into(),
            expected: scores.len(),
            got: types.len(),
        });
    }
    let mut normal = Vec::new();
    let mut by_type: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for ((&s, &l), t) in scores.iter().zip(labels).zip(types) {
        if l {
            by_type.entry(t.as_ref()).or_default().push(key(s));
        } else {
            normal.push(key(s));
        }
    }
    class_counts(normal.len(), by_type.len(), "per_type_auroc")?;
    radix_sort(&mut normal);
    Ok(by_type
        .into_iter()
        .map(|(t, mut pos)| {
            radix_sort(&mut pos);
            (t.to_string(), auc_sorted(&normal, &pos))
        })
        .collect())
}
