//! Standardising two image scores so they can be added ([`ImageScore::Combined`]).
//!
//! **[our choice; not in the paper]** The dense recipe has two image scores from one network:
//! the mean of the top 1 % of the anomaly map (strong on small, local defects) and the Gaussian
//! of the pooled features of the whole image (PAPER.md stage 2; strong on defects that change
//! the whole image, such as cracked solar cells). They live on unrelated scales, so each is
//! standardised by its mean and standard deviation over normal images, and the two z-scores are
//! summed.
//!
//! Where the normal images' statistics come from matters: the pooled Gaussian is fitted on the
//! training images' features, and in sample it scores them lower than new normal images (on the
//! hard sets ×2–3, more where there are few images). So [`DetectorParams::fit`] estimates the
//! pooled statistics by 5-fold cross-validation of the density over the training features, and
//! the map's statistics in sample (the map's patch Gaussians are fitted on many patches per image
//! and barely overfit: held-out / in-sample mean ≈ 1.0). [`Detector::fit_score_scale`] replaces
//! both with the statistics of other normal images, when a user has them.
//!
//! The pooled z-score is weighted by `min(1, n / d)` ([`pooled_weight`]): `n` training images
//! for a `d`-dimensional Gaussian (d = 512). With fewer images than dimensions the covariance is
//! mostly shrinkage, and the pooled score is a weak detector (mpdd/metal_plate, 49 images: image
//! AUROC 72 pooled against 99.4 from the map); the weight lets the map decide there, and gives
//! both scores equal say from `d` images up. Measured in docs/results.md.
//!
//! [`ImageScore::Combined`]: crate::pipeline::ImageScore::Combined
//! [`DetectorParams::fit`]: crate::pipeline::DetectorParams::fit
//! [`Detector::fit_score_scale`]: super::Detector::fit_score_scale
use crate::density::Density;
use crate::error::{Error, Result};
use crate::localize::Localizer;
use image::RgbImage;
use ndarray::{ArrayView2, Axis};
use serde::{Deserialize, Serialize};

/// Folds of the cross-validated pooled statistics at fit time.
pub const SCALE_FOLDS: usize = 5;

/// Training images whose map scores give the map's statistics at fit time (evenly spaced), at
/// most: scoring maps is the expensive part.
pub const SCALE_MAP_IMAGES: usize = 64;

/// Mean and standard deviation of one score over normal images: `z = (s − mean) / sd`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Standardiser {
    /// Mean score.
    pub mean: f64,
    /// Standard deviation (population; never below a small positive floor).
    pub sd: f64,
    /// Images they were computed on.
    pub n: usize,
}

/// Floor of [`Standardiser::sd`], relative to the mean's magnitude (and absolute 1e-12), so a
/// constant score cannot divide by zero.
const SD_FLOOR: f64 = 1e-6;

impl Standardiser {
    /// The statistics of `scores` (at least two, all finite); `what` names them in errors.
    pub fn fit(scores: &[f32], what: &str) -> Result<Self> {
        if scores.len() < 2 {
            return Err(Error::invalid_input(
                what,
                format!(
                    "{} normal image(s): standardising a score needs at least 2",
                    scores.len()
                ),
            ));
        }
        if let Some(bad) = scores.iter().find(|s| !s.is_finite()) {
            return Err(Error::invalid_input(
                what,
                format!("a score is not finite ({bad}): the images or the model are broken"),
            ));
        }
        let n = scores.len() as f64;
        let mean = scores.iter().map(|&s| f64::from(s)).sum::<f64>() / n;
        let var = scores
            .iter()
            .map(|&s| (f64::from(s) - mean).powi(2))
            .sum::<f64>()
            / n;
        let sd = var.sqrt().max(SD_FLOOR * mean.abs()).max(1e-12);
        Ok(Self {
            mean,
            sd,
            n: scores.len(),
        })
    }

    /// `(s − mean) / sd`.
    pub fn apply(&self, s: f32) -> f32 {
        ((f64::from(s) - self.mean) / self.sd) as f32
    }
}

/// Where a [`ScoreScale`]'s statistics come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ScaleSource {
    /// Set by `fit` from the training images: the map's in sample, the pooled score's by
    /// cross-validation of the density.
    Training,
    /// Set by [`Detector::fit_score_scale`](super::Detector::fit_score_scale) from normal images
    /// held out of training.
    HeldOut,
}

/// The two standardisers of [`ImageScore::Combined`](crate::pipeline::ImageScore::Combined):
/// the image score is `map.apply(map score) + pooled.apply(pooled score)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreScale {
    /// Of the map score (mean of the top 1 % of the anomaly map).
    pub map: Standardiser,
    /// Of the pooled score (the density of the pooled features).
    pub pooled: Standardiser,
    /// Where the statistics come from.
    pub source: ScaleSource,
    /// Weight of the pooled z-score, in [0, 1]: `min(1, n / d)` for a pooled Gaussian fitted on
    /// `n` feature vectors of `d` dimensions.
    #[serde(default = "full_weight")]
    pub pooled_weight: f64,
}

fn full_weight() -> f64 {
    1.0
}

impl ScoreScale {
    /// The combined score of one image from its two scores:
    /// `z_map + pooled_weight · z_pooled`.
    pub fn combine(&self, map: f32, pooled: f32) -> f32 {
        (f64::from(self.map.apply(map)) + self.pooled_weight * f64::from(self.pooled.apply(pooled)))
            as f32
    }

    /// Whether every statistic is finite, each deviation positive and the weight in [0, 1]
    /// (what a checkpoint's record must satisfy).
    pub fn is_valid(&self) -> bool {
        [self.map, self.pooled]
            .iter()
            .all(|z| z.mean.is_finite() && z.sd.is_finite() && z.sd > 0.0)
            && (0.0..=1.0).contains(&self.pooled_weight)
    }
}

/// The pooled z-score's weight in [`ScoreScale::combine`]: `min(1, n / d)` for a pooled Gaussian
/// fitted on `n` feature vectors of `d` dimensions **[our choice]** (see the module docs).
pub fn pooled_weight(n: usize, d: usize) -> f64 {
    if d == 0 {
        return 1.0;
    }
    (n as f64 / d as f64).min(1.0)
}

/// The folds [`cross_validated_scores`] uses for `n` rows when asked for `folds`.
fn fold_count(n: usize, folds: usize) -> usize {
    folds.clamp(2, n.max(2))
}

/// The fewest rows any fold of [`cross_validated_scores`] fits its density on, for `n` rows
/// over `folds` folds (fold `f` scores rows `i % folds == f`, at most ⌈n / folds⌉ of them).
pub(crate) fn smallest_fold_fit(n: usize, folds: usize) -> usize {
    n - n.div_ceil(fold_count(n, folds))
}

/// Out-of-sample scores of every row of `features` under `density`: each of `folds` folds (rows
/// `i % folds == f`) is scored by the density fitted on the other rows. Fewer rows than the
/// density needs per fold is an error naming the density.
pub(crate) fn cross_validated_scores(
    density: &Density,
    features: ArrayView2<f32>,
    folds: usize,
) -> Result<Vec<f32>> {
    let n = features.nrows();
    let folds = fold_count(n, folds);
    let mut out = vec![0f32; n];
    for f in 0..folds {
        let (train, test): (Vec<usize>, Vec<usize>) = (0..n).partition(|i| i % folds != f);
        if test.is_empty() {
            continue;
        }
        // [n − n/folds, d] fit rows, [≈n/folds, d] scored rows
        let fitted = density.fit(features.select(Axis(0), &train).view())?;
        let scores = fitted.score(features.select(Axis(0), &test).view())?;
        for (&i, &s) in test.iter().zip(scores.iter()) {
            out[i] = s;
        }
    }
    Ok(out)
}

/// [`ImageScore::Combined`](crate::pipeline::ImageScore::Combined)'s statistics from the
/// training images alone: the map scores of up to [`SCALE_MAP_IMAGES`] of `images` (in sample),
/// and the pooled scores of all of them cross-validated over [`SCALE_FOLDS`] folds of their
/// `features` (`[n, 512]`) under `density`.
pub(crate) fn training_scale(
    density: &Density,
    localizer: &Localizer,
    images: &[RgbImage],
    features: ArrayView2<f32>,
) -> Result<ScoreScale> {
    let picked: Vec<RgbImage> = evenly_spaced(images.len(), SCALE_MAP_IMAGES)
        .into_iter()
        .map(|i| images[i].clone())
        .collect();
    let mut map = Vec::with_capacity(picked.len());
    for chunk in picked.chunks(super::SCORE_BATCH) {
        map.extend(localizer.image_scores(chunk)?);
    }
    let pooled = cross_validated_scores(density, features, SCALE_FOLDS)?;
    Ok(ScoreScale {
        map: Standardiser::fit(&map, "map scores of the training images")?,
        pooled: Standardiser::fit(&pooled, "pooled scores of the training images")?,
        source: ScaleSource::Training,
        pooled_weight: pooled_weight(features.nrows(), features.ncols()),
    })
}

/// `k` indices spread evenly over `0..n` (all of them when `n ≤ k`).
pub(crate) fn evenly_spaced(n: usize, k: usize) -> Vec<usize> {
    if n <= k {
        return (0..n).collect();
    }
    (0..k).map(|i| (2 * i + 1) * n / (2 * k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn standardiser_matches_hand_values() {
        // mean 2, population variance ((1)² + 0 + 1²)/3 = 2/3
        let s = Standardiser::fit(&[1.0, 2.0, 3.0], "x").unwrap();
        assert!((s.mean - 2.0).abs() < 1e-12);
        assert!((s.sd - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(s.n, 3);
        assert!((s.apply(3.0) - (1.0 / (2.0f64 / 3.0).sqrt()) as f32).abs() < 1e-6);
    }

    #[test]
    fn standardiser_refuses_too_few_or_non_finite_scores() {
        let e = Standardiser::fit(&[1.0], "map score").unwrap_err();
        assert!(e.to_string().contains("map score"), "{e}");
        assert!(Standardiser::fit(&[1.0, f32::NAN], "x").is_err());
        // a constant score: floored sd, finite z
        let c = Standardiser::fit(&[5.0, 5.0, 5.0], "x").unwrap();
        assert!(c.sd > 0.0 && c.apply(6.0).is_finite());
    }

    #[test]
    fn combine_sums_the_two_z_scores() {
        let scale = ScoreScale {
            map: Standardiser {
                mean: 1.0,
                sd: 2.0,
                n: 4,
            },
            pooled: Standardiser {
                mean: 10.0,
                sd: 5.0,
                n: 4,
            },
            source: ScaleSource::HeldOut,
            pooled_weight: 1.0,
        };
        // (5 − 1)/2 + (0 − 10)/5 = 2 − 2 = 0
        assert!(scale.combine(5.0, 0.0).abs() < 1e-6);
        assert!((scale.combine(3.0, 20.0) - 3.0).abs() < 1e-6);
        // weighted: (3 − 1)/2 + 0.25 · (20 − 10)/5 = 1 + 0.5
        let quarter = ScoreScale {
            pooled_weight: 0.25,
            ..scale
        };
        assert!((quarter.combine(3.0, 20.0) - 1.5).abs() < 1e-6);
        assert!(quarter.is_valid());
        for w in [-0.1, 1.5, f64::NAN] {
            assert!(
                !ScoreScale {
                    pooled_weight: w,
                    ..scale
                }
                .is_valid(),
                "{w}"
            );
        }
    }

    #[test]
    fn pooled_weight_is_images_per_dimension_capped_at_one() {
        assert_eq!(pooled_weight(49, 512), 49.0 / 512.0);
        assert_eq!(pooled_weight(256, 512), 0.5);
        assert_eq!(pooled_weight(512, 512), 1.0);
        assert_eq!(pooled_weight(2000, 512), 1.0);
    }

    #[test]
    fn cross_validated_scores_score_each_row_by_a_density_without_it() {
        // 2-d Gaussian with empirical (1/n) covariance. Leave-one-out (6 folds of 6 rows): the
        // outlier (10, 2) is scored by the fit on the other five rows alone, whose columns
        // [0,1,2,3,4] and [1,-1,0,-1,1] have means 2 and 0, variances 2 and 0.8 and covariance 0,
        // so its score is (10-2)²/2 + (2-0)²/0.8 = 32 + 5 = 37 (by hand).
        let x = [0.0f32, 1., 1., -1., 2., 0., 3., -1., 10., 2., 4., 1.];
        let features = Array2::from_shape_vec((6, 2), x.to_vec()).unwrap();
        let density = Density::Gaussian(
            crate::density::GaussianParams::default()
                .covariance(crate::density::Covariance::empirical())
                .l2_normalize(false),
        );
        let cv = cross_validated_scores(&density, features.view(), 6).unwrap();
        assert!((cv[4] - 37.0).abs() < 1e-4, "{cv:?}");
        // the outlier scores highest out of sample
        let max = cv.iter().cloned().fold(f32::MIN, f32::max);
        assert_eq!(cv[4], max);
    }

    #[test]
    fn evenly_spaced_picks_centres() {
        assert_eq!(evenly_spaced(3, 5), vec![0, 1, 2]);
        assert_eq!(evenly_spaced(10, 2), vec![2, 7]);
    }
}
