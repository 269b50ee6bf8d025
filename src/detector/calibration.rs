//! Decision thresholds, and the record of how one was set ([`Calibration`]).
//!
//! Without defect samples the threshold comes from normal images held out from training:
//! [`Detector::threshold_from_synthetic`] takes the F1-max threshold between them and their
//! CutPaste/Scar views, but **never below the 0.99-quantile of their scores** (so it flags at most
//! 1 % of them), and when the views separate poorly from the normals (AUROC < 0.9) it falls back to
//! that quantile altogether **[our choice: both numbers, see [`CalibrationRule`]]**. Why: when the
//! views look like the normals, F1-max degenerates to "flag everything" (F1 = 0.8 with two views
//! per normal), a threshold below every normal score.
use super::Detector;
use crate::error::{Error, Result};
use crate::metrics::{f1_max, roc_auc};
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// How a detector's threshold was set. Stored in checkpoints and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ThresholdMethod {
    /// Given explicitly ([`Detector::set_threshold`]).
    Explicit,
    /// The q-quantile of normal images' scores ([`Detector::threshold_from_quantile`]).
    Quantile,
    /// F1-max on labelled images ([`Detector::threshold_from_f1`]).
    F1,
    /// Synthetic validation: the F1-max threshold between normal images and their CutPaste/Scar
    /// views (it was at or above the quantile floor).
    Synthetic,
    /// Synthetic validation whose F1-max threshold lay below the quantile floor: raised to it.
    SyntheticFloor,
    /// Synthetic validation abandoned because the views separate poorly from the normal images
    /// (AUROC below [`CalibrationRule::min_auroc`]): the quantile rule instead.
    QuantileFallback,
}

/// The record of how the threshold was set: method, the numbers behind it, and a note when a
/// safeguard changed the outcome. Stored in the checkpoint's metadata (`calibration`) and in
/// [`Report::calibration`](super::Report::calibration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Calibration {
    /// How it was set.
    pub method: ThresholdMethod,
    /// The threshold (scores above it are anomalous).
    pub threshold: f32,
    /// Images it was computed on (normal images for the quantile and synthetic rules; 0 when
    /// explicit).
    pub n_images: usize,
    /// Synthetic rules: AUROC of the normal images vs their CutPaste/Scar views.
    pub synthetic_auroc: Option<f64>,
    /// Synthetic rules: the F1-max threshold between normals and views (what was stored before
    /// the safeguards existed).
    pub f1_threshold: Option<f32>,
    /// Quantile and synthetic rules: q of the quantile rule / floor.
    pub quantile: Option<f64>,
    /// Quantile and synthetic rules: the q-quantile of the normal images' scores.
    pub quantile_threshold: Option<f32>,
    /// Why a safeguard changed the threshold (floor or fallback); `None` otherwise.
    pub note: Option<String>,
}

impl Calibration {
    fn plain(method: ThresholdMethod, threshold: f32, n_images: usize) -> Self {
        Calibration {
            method,
            threshold,
            n_images,
            synthetic_auroc: None,
            f1_threshold: None,
            quantile: None,
            quantile_threshold: None,
            note: None,
        }
    }

    /// One line for logs and reports, e.g. `synthetic F1-max (views vs normals AUROC 0.973)`.
    pub fn summary(&self) -> String {
        let auroc = self
            .synthetic_auroc
            .map_or(String::new(), |a| format!("views vs normals AUROC {a:.3}"));
        let q = self.quantile.unwrap_or(f64::NAN);
        match self.method {
            ThresholdMethod::Explicit => "set explicitly".into(),
            ThresholdMethod::F1 => format!("F1-max on {} labelled images", self.n_images),
            ThresholdMethod::Quantile => {
                format!("{q}-quantile of {} normal images", self.n_images)
            }
            ThresholdMethod::Synthetic => format!("synthetic F1-max ({auroc})"),
            ThresholdMethod::SyntheticFloor => {
                format!("synthetic F1-max raised to the {q}-quantile floor ({auroc})")
            }
            ThresholdMethod::QuantileFallback => {
                format!("fallback to the {q}-quantile of normal scores ({auroc})")
            }
        }
    }
}

/// The safeguards of [`Detector::calibrate_synthetic`]. Default: `quantile` 0.99, `min_auroc` 0.9
/// **[our choice]**.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CalibrationRule {
    /// The threshold is never below this quantile of the normal images' scores, so it flags at
    /// most a fraction 1 − q of them. In (0, 1].
    pub quantile: f64,
    /// Below this AUROC of normals vs views, the views are not trusted and the quantile rule is
    /// used. In [0, 1]; 0 never falls back.
    pub min_auroc: f64,
}

impl Default for CalibrationRule {
    fn default() -> Self {
        CalibrationRule {
            quantile: 0.99,
            min_auroc: 0.9,
        }
    }
}

impl CalibrationRule {
    /// Validates the fields ([`Error::InvalidParam`] naming the field).
    pub fn check(&self) -> Result<()> {
        check_quantile(self.quantile, "quantile")?;
        if !(0.0..=1.0).contains(&self.min_auroc) {
            return Err(Error::invalid_param(
                "min_auroc",
                format!("must be in [0, 1] (default 0.9), got {}", self.min_auroc),
            ));
        }
        Ok(())
    }

    /// The calibration from the scores of normal images and of their synthetic views (any
    /// number of views; higher = more anomalous). Pure: no model involved.
    pub fn calibrate(&self, normal: &[f32], views: &[f32]) -> Result<Calibration> {
        self.check()?;
        if normal.is_empty() || views.is_empty() {
            return Err(Error::invalid_input(
                "normal",
                "no images given; hold out some normal training images for the threshold",
            ));
        }
        let scores: Vec<f32> = normal.iter().chain(views).copied().collect();
        let labels: Vec<bool> = (0..scores.len()).map(|i| i >= normal.len()).collect();
        let auroc = roc_auc(&scores, &labels)?;
        // f1_max's threshold is the lowest score predicted anomalous (score >= t); ours is
        // strict (score > t), so step just below it.
        let t_f1 = f1_max(&scores, &labels)?.threshold.next_down();
        let t_q = quantile(normal, self.quantile)?;
        let n = normal.len();
        let (method, threshold, note) = if auroc < self.min_auroc {
            let note = format!(
                "the CutPaste/Scar views of the {n} held-out normal images separate poorly from \
                 them (AUROC {auroc:.3} < {}), so the threshold is the {}-quantile of their \
                 scores ({t_q}) instead of the F1-max ({t_f1})",
                self.min_auroc, self.quantile
            );
            (ThresholdMethod::QuantileFallback, t_q, Some(note))
        } else if t_f1 < t_q {
            let note = format!(
                "the synthetic F1-max threshold {t_f1} would flag more than {:.0} % of the {n} \
                 held-out normal images; raised to their {}-quantile {t_q}",
                100.0 * (1.0 - self.quantile),
                self.quantile
            );
            (ThresholdMethod::SyntheticFloor, t_q, Some(note))
        } else {
            (ThresholdMethod::Synthetic, t_f1, None)
        };
        Ok(Calibration {
            synthetic_auroc: Some(auroc),
            f1_threshold: Some(t_f1),
            quantile: Some(self.quantile),
            quantile_threshold: Some(t_q),
            note,
            ..Calibration::plain(method, threshold, n)
        })
    }
}

fn check_quantile(q: f64, name: &str) -> Result<()> {
    if !(q > 0.0 && q <= 1.0) {
        return Err(Error::invalid_param(
            name,
            format!("must be in (0, 1], got {q}"),
        ));
    }
    Ok(())
}

/// The q-quantile (0 < q ≤ 1) of `scores` as a strict threshold: the ⌈q·n⌉-th smallest score,
/// so at most ⌊(1 − q)·n⌋ of the scores lie above it.
pub fn quantile(scores: &[f32], q: f64) -> Result<f32> {
    check_quantile(q, "q")?;
    if scores.is_empty() {
        return Err(Error::invalid_input("normal", "no images given"));
    }
    let mut s = scores.to_vec();
    s.sort_by(f32::total_cmp);
    let idx = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    Ok(s[idx])
}

impl Detector {
    /// The decision threshold, once set (scores above it are anomalous).
    pub fn threshold(&self) -> Option<f32> {
        self.threshold
    }

    /// How the threshold was set, when it was set by this crate version (files written before
    /// calibration records existed load without one).
    pub fn calibration(&self) -> Option<&Calibration> {
        self.calibration.as_ref()
    }

    fn store(&mut self, c: Calibration) -> f32 {
        self.threshold = Some(c.threshold);
        let t = c.threshold;
        self.calibration = Some(c);
        t
    }

    /// Sets the decision threshold explicitly.
    pub fn set_threshold(&mut self, threshold: f32) -> Result<()> {
        if !threshold.is_finite() {
            return Err(Error::invalid_param("threshold", "must be finite"));
        }
        self.store(Calibration::plain(ThresholdMethod::Explicit, threshold, 0));
        Ok(())
    }

    /// Sets the threshold to the `q`-quantile (0 < q ≤ 1, e.g. 0.99) of the scores of `normal`
    /// images — for users with no defect samples; it flags at most a fraction 1 − q of them.
    /// Returns it.
    pub fn threshold_from_quantile(&mut self, normal: &[RgbImage], q: f64) -> Result<f32> {
        check_quantile(q, "q")?;
        let s = self.score_batch(normal)?;
        let t = quantile(&s, q)?;
        Ok(self.store(Calibration {
            quantile: Some(q),
            quantile_threshold: Some(t),
            ..Calibration::plain(ThresholdMethod::Quantile, t, s.len())
        }))
    }

    /// Sets the threshold that maximises F1 on labelled images (`true` = anomalous). Returns it.
    pub fn threshold_from_f1(&mut self, images: &[RgbImage], anomalous: &[bool]) -> Result<f32> {
        let s = self.score_batch(images)?;
        // f1_max's threshold is the lowest score predicted anomalous (score >= t); ours is
        // strict (score > t), so step just below it.
        let t = f1_max(&s, anomalous)?.threshold.next_down();
        Ok(self.store(Calibration::plain(ThresholdMethod::F1, t, s.len())))
    }

    /// Sets the threshold by **synthetic validation** with the default [`CalibrationRule`] — for
    /// users with no defect samples — and returns it; see [`calibrate_synthetic`](Self::calibrate_synthetic).
    pub fn threshold_from_synthetic(&mut self, normal: &[RgbImage], seed: u64) -> Result<f32> {
        Ok(self
            .calibrate_synthetic(normal, seed, CalibrationRule::default())?
            .threshold)
    }

    /// Synthetic validation: scores the `normal` images (held out from training: in-sample scores
    /// are biased low) and their CutPaste and Scar views from the 3-way augmentation (without
    /// pre-augmentation, deterministic by `seed`), then applies `rule` (see the module docs):
    /// F1-max between normals and views, never below the `rule.quantile` of the normal scores,
    /// and the quantile alone when the views' AUROC is below `rule.min_auroc`. A safeguard that
    /// changed the outcome is logged (`log::warn!`) and explained in [`Calibration::note`].
    pub fn calibrate_synthetic(
        &mut self,
        normal: &[RgbImage],
        seed: u64,
        rule: CalibrationRule,
    ) -> Result<Calibration> {
        rule.check()?;
        if normal.is_empty() {
            return Err(Error::invalid_input("normal", "no images given"));
        }
        let aug = crate::augment::Augmentation::three_way().pre_augment(None);
        let views = crate::augment::batch_views(&aug, &self.prepare(normal), seed)?;
        let anomalous: Vec<bool> = views.iter().map(|v| v.label != 0).collect();
        let images: Vec<RgbImage> = views.into_iter().map(|v| v.image).collect();
        let scores = self.score_batch(&images)?;
        let split = |want: bool| -> Vec<f32> {
            scores
                .iter()
                .zip(&anomalous)
                .filter(|(_, &a)| a == want)
                .map(|(s, _)| *s)
                .collect()
        };
        let c = rule.calibrate(&split(false), &split(true))?;
        if let Some(note) = &c.note {
            log::warn!("threshold calibration: {note}");
        }
        self.store(c.clone());
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(n: usize, lo: f32, step: f32) -> Vec<f32> {
        (0..n).map(|i| lo + step * i as f32).collect()
    }

    #[test]
    fn inseparable_views_fall_back_to_the_quantile() {
        // Views scored like the normals (AUROC ≈ 0.5): F1-max degenerates to "flag everything".
        let normal = spread(100, 1000.0, 10.0);
        let views: Vec<f32> = normal.iter().chain(&normal).map(|s| s - 5.0).collect();
        let c = CalibrationRule::default()
            .calibrate(&normal, &views)
            .unwrap();
        assert_eq!(c.method, ThresholdMethod::QuantileFallback);
        let auroc = c.synthetic_auroc.unwrap();
        assert!((0.4..0.6).contains(&auroc), "{auroc}");
        // the old rule's threshold lies below every normal score
        assert!(c.f1_threshold.unwrap() < 1000.0, "{c:?}");
        let flagged = normal.iter().filter(|s| **s > c.threshold).count();
        assert!(flagged <= 1, "{flagged} of 100 normals flagged: {c:?}");
        assert!(c.note.as_deref().unwrap().contains("separate poorly"));
    }

    #[test]
    fn separable_views_keep_f1_above_the_floor() {
        let normal = spread(50, 0.0, 1.0);
        let views = spread(100, 100.0, 1.0);
        let c = CalibrationRule::default()
            .calibrate(&normal, &views)
            .unwrap();
        assert_eq!(c.method, ThresholdMethod::Synthetic);
        assert_eq!(c.synthetic_auroc, Some(1.0));
        assert_eq!(c.threshold, c.f1_threshold.unwrap());
        assert!(c.threshold >= 49.0 && c.threshold < 100.0, "{c:?}");
        assert_eq!(c.note, None);
    }

    #[test]
    fn f1_below_the_floor_is_raised_to_it() {
        // Separable enough (AUROC ≈ 0.96), but a few normals overlap the views: F1-max cuts
        // into the normals' upper tail.
        let mut normal = spread(96, 0.0, 1.0);
        normal.extend([150.0, 160.0, 170.0, 180.0]);
        let views = spread(200, 100.0, 1.0);
        let c = CalibrationRule::default()
            .calibrate(&normal, &views)
            .unwrap();
        assert!(c.synthetic_auroc.unwrap() >= 0.9, "{c:?}");
        assert!(
            c.f1_threshold.unwrap() < c.quantile_threshold.unwrap(),
            "{c:?}"
        );
        assert_eq!(c.method, ThresholdMethod::SyntheticFloor);
        assert_eq!(c.threshold, 170.0);
        assert_eq!(normal.iter().filter(|s| **s > c.threshold).count(), 1);
    }

    #[test]
    fn quantile_flags_at_most_one_minus_q() {
        for n in [1usize, 7, 21, 100, 1000] {
            let s: Vec<f32> = (0..n).rev().map(|i| (i * 37 % 101) as f32).collect();
            for q in [0.5, 0.9, 0.99, 1.0] {
                let t = quantile(&s, q).unwrap();
                let above = s.iter().filter(|v| **v > t).count();
                assert!(above as f64 <= (1.0 - q) * n as f64 + 1e-9, "n {n} q {q}");
            }
        }
        assert!(quantile(&[], 0.9).is_err());
        assert!(quantile(&[1.0], 0.0).is_err());
        let bad = CalibrationRule {
            min_auroc: 1.5,
            ..Default::default()
        };
        assert!(
            matches!(bad.check(), Err(Error::InvalidParam { name, .. }) if name == "min_auroc")
        );
    }
}
