//! A 2-D map of the detector's pooled features, like the paper's t-SNE visualisation of learned
//! representations: training normals, their CutPaste and Scar views, test good and test defect
//! images embedded together with an exact [`tsne`].
//!
//! Features are L2-normalised per row before t-SNE **[our choice]**, as the density estimator
//! sees them.
//!
//! ```no_run
//! use cutpaste::prelude::*;
//! # fn run(det: &Detector, ds: &Dataset) -> cutpaste::Result<()> {
//! let map = cutpaste::embedding::embedding_map(det, ds, 7, 100)?;
//! println!("{} points, KL {:.3}", map.points.len(), map.kl_divergence);
//! # Ok(()) }
//! ```
mod tsne;

pub use tsne::{tsne, Tsne, TsneParams};

use crate::augment::{batch_views, Augmentation, ViewKind};
use crate::data::{load_all, Dataset};
use crate::detector::Detector;
use crate::error::{Error, Result};
use crate::linalg::l2_normalize_rows;
use image::RgbImage;
use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Where a point of the map comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EmbeddingGroup {
    /// A defect-free training image.
    TrainNormal,
    /// A CutPaste view of a training image.
    CutPaste,
    /// A CutPaste-Scar view of a training image.
    Scar,
    /// A defect-free test image.
    TestGood,
    /// A defective test image.
    TestDefect,
}

impl EmbeddingGroup {
    /// All groups, in legend order.
    pub const ALL: [EmbeddingGroup; 5] = [
        EmbeddingGroup::TrainNormal,
        EmbeddingGroup::CutPaste,
        EmbeddingGroup::Scar,
        EmbeddingGroup::TestGood,
        EmbeddingGroup::TestDefect,
    ];

    /// A human-readable name for legends.
    pub fn label(self) -> &'static str {
        match self {
            EmbeddingGroup::TrainNormal => "train normal",
            EmbeddingGroup::CutPaste => "CutPaste views",
            EmbeddingGroup::Scar => "Scar views",
            EmbeddingGroup::TestGood => "test good",
            EmbeddingGroup::TestDefect => "test defect",
        }
    }
}

/// One embedded image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingPoint {
    /// Its group.
    pub group: EmbeddingGroup,
    /// First t-SNE coordinate.
    pub x: f64,
    /// Second t-SNE coordinate.
    pub y: f64,
}

/// A 2-D t-SNE map of pooled features (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingMap {
    /// The points, group by group in the order given.
    pub points: Vec<EmbeddingPoint>,
    /// The t-SNE seed.
    pub seed: u64,
    /// The perplexity used.
    pub perplexity: f64,
    /// Final KL(P ‖ Q).
    pub kl_divergence: f64,
    /// Wall time of feature extraction and t-SNE, seconds.
    pub seconds: f64,
}

impl EmbeddingMap {
    /// Embeds feature rows of several groups together (each `[n_g, d]`, same `d`; empty groups
    /// are skipped). Needs at least 2 rows in all. Deterministic by `seed`.
    pub fn from_features(groups: &[(EmbeddingGroup, ArrayView2<f32>)], seed: u64) -> Result<Self> {
        let t0 = Instant::now();
        let d = groups.iter().map(|(_, f)| f.ncols()).max().unwrap_or(0);
        let n: usize = groups.iter().map(|(_, f)| f.nrows()).sum();
        let mut x = Array2::<f64>::zeros((n, d));
        let mut tags = Vec::with_capacity(n);
        let mut row = 0;
        for (g, f) in groups {
            if f.nrows() > 0 && f.ncols() != d {
                return Err(Error::DimensionMismatch {
                    what: format!("embedding map: feature width of group `{}`", g.label()),
                    expected: d,
                    got: f.ncols(),
                });
            }
            for r in f.rows() {
                x.row_mut(row).assign(&r.mapv(f64::from));
                tags.push(*g);
                row += 1;
            }
        }
        l2_normalize_rows(&mut x);
        let t = tsne(x.view(), &TsneParams::new(seed))?;
        let points = tags
            .into_iter()
            .zip(t.coords.rows())
            .map(|(group, c)| EmbeddingPoint {
                group,
                x: c[0],
                y: c[1],
            })
            .collect();
        Ok(Self {
            points,
            seed,
            perplexity: t.perplexity,
            kl_divergence: t.kl_divergence,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }

    /// Number of points of `group`.
    pub fn count(&self, group: EmbeddingGroup) -> usize {
        self.points.iter().filter(|p| p.group == group).count()
    }
}

/// Up to `k` indices of `0..len`, evenly spaced, in order.
fn spread(len: usize, k: usize) -> Vec<usize> {
    let k = k.min(len);
    (0..k).map(|i| i * len / k).collect()
}

/// The map of the paper's figure for `detector` on `dataset`: up to `max_per_group` training
/// images (evenly spaced in dataset order), their CutPaste and Scar views (3-way augmentation
/// without pre-augmentation, views seeded by `seed`), and up to `max_per_group` good and
/// defective test images each; pooled features from [`Detector::embed`], then t-SNE seeded by
/// `seed`. Keep `5 · max_per_group` ≲ 1000 (exact t-SNE is O(n²)).
///
/// Errors: `max_per_group == 0` → [`Error::InvalidParam`]; image loading and libtorch errors.
pub fn embedding_map(
    detector: &Detector,
    dataset: &Dataset,
    seed: u64,
    max_per_group: usize,
) -> Result<EmbeddingMap> {
    if max_per_group == 0 {
        return Err(Error::invalid_param("max_per_group", "must be >= 1"));
    }
    let t0 = Instant::now();
    let side = detector.params_used().input_size();
    let pick = |samples: &[crate::data::Sample]| -> Vec<crate::data::Sample> {
        spread(samples.len(), max_per_group)
            .into_iter()
            .map(|i| samples[i].clone())
            .collect()
    };
    let train = load_all(&pick(&dataset.train), side)?;
    let aug = Augmentation::three_way().pre_augment(None);
    let views = batch_views(&aug, &train, seed)?;
    let of_kind = |kind: ViewKind| -> Vec<RgbImage> {
        views
            .iter()
            .filter(|v| v.kind == kind)
            .map(|v| v.image.clone())
            .collect()
    };
    let (good, bad): (Vec<_>, Vec<_>) = dataset
        .test
        .iter()
        .cloned()
        .partition(|s| !s.is_anomalous());
    let sets: [(EmbeddingGroup, Vec<RgbImage>); 5] = [
        (EmbeddingGroup::TrainNormal, train.clone()),
        (EmbeddingGroup::CutPaste, of_kind(ViewKind::CutPaste)),
        (EmbeddingGroup::Scar, of_kind(ViewKind::Scar)),
        (EmbeddingGroup::TestGood, load_all(&pick(&good), side)?),
        (EmbeddingGroup::TestDefect, load_all(&pick(&bad), side)?),
    ];
    let mut feats = Vec::with_capacity(5);
    for (g, imgs) in &sets {
        let f = if imgs.is_empty() {
            Array2::zeros((0, 0))
        } else {
            detector.embed(imgs)?
        };
        feats.push((*g, f));
    }
    let views: Vec<(EmbeddingGroup, ArrayView2<f32>)> =
        feats.iter().map(|(g, f)| (*g, f.view())).collect();
    let mut map = EmbeddingMap::from_features(&views, seed)?;
    map.seconds = t0.elapsed().as_secs_f64();
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_even_and_bounded() {
        assert_eq!(spread(10, 3), vec![0, 3, 6]);
        assert_eq!(spread(2, 5), vec![0, 1]);
        assert!(spread(0, 5).is_empty());
    }

    #[test]
    fn from_features_keeps_groups_and_checks_widths() {
        let a = Array2::from_shape_fn((6, 4), |(i, j)| ((i * 7 + j * 3) % 5) as f32 + 1.0);
        let b = Array2::from_shape_fn((4, 4), |(i, j)| -(((i + j) % 3) as f32) - 1.0);
        let empty = Array2::<f32>::zeros((0, 0));
        let m = EmbeddingMap::from_features(
            &[
                (EmbeddingGroup::TrainNormal, a.view()),
                (EmbeddingGroup::Scar, empty.view()),
                (EmbeddingGroup::TestDefect, b.view()),
            ],
            3,
        )
        .unwrap();
        assert_eq!(m.points.len(), 10);
        assert_eq!(m.count(EmbeddingGroup::TrainNormal), 6);
        assert_eq!(m.count(EmbeddingGroup::Scar), 0);
        assert_eq!(m.count(EmbeddingGroup::TestDefect), 4);
        assert_eq!(m.points[6].group, EmbeddingGroup::TestDefect);
        let narrow = Array2::<f32>::ones((3, 2));
        assert!(matches!(
            EmbeddingMap::from_features(
                &[
                    (EmbeddingGroup::TrainNormal, a.view()),
                    (EmbeddingGroup::TestGood, narrow.view())
                ],
                3
            ),
            Err(Error::DimensionMismatch { .. })
        ));
    }
}
