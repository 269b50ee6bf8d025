//! The MLP head on the pooled ResNet-18 features (PAPER.md, "Training"; depth and width are
//! **[our choice]**: hidden layers of Linear(no bias) + BatchNorm + ReLU, default one hidden
//! 512 layer, then a 128-d linear embedding, then the logits layer).
use super::layers::{BatchNorm, Init, Linear};
use super::resnet::FEATURE_DIM;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// Shape of the MLP head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadConfig {
    /// Widths of the hidden Linear(no bias) + BatchNorm + ReLU layers, in order.
    pub hidden: Vec<i64>,
    /// Width of the linear embedding layer before the logits.
    pub embedding: i64,
}

impl HeadConfig {
    /// The crate's default **[our choice]**: one hidden 512 layer, a 128-d embedding.
    pub fn paper() -> Self {
        Self {
            hidden: vec![512],
            embedding: 128,
        }
    }

    /// The deeper DROC-style head: eight hidden 512 layers, a 128-d embedding.
    pub fn droc() -> Self {
        Self {
            hidden: vec![512; 8],
            embedding: 128,
        }
    }

    /// Number of weights in the head's matrices (biases and BatchNorm excluded) for
    /// `num_classes` logits; `None` on overflow. A lower bound on what a file storing the head
    /// holds, checked before a head described by untrusted metadata is allocated.
    pub(crate) fn weight_count(&self, num_classes: i64) -> Option<u64> {
        let mut width = FEATURE_DIM as u64;
        let mut total = 0u64;
        for &w in self.hidden.iter().chain([&self.embedding]) {
            let w = u64::try_from(w).ok()?;
            total = total.checked_add(width.checked_mul(w)?)?;
            width = w;
        }
        total.checked_add(width.checked_mul(u64::try_from(num_classes).ok()?)?)
    }

    /// Checks that every width is ≥ 1.
    pub fn check(&self) -> Result<()> {
        if let Some(w) = self.hidden.iter().find(|&&w| w < 1) {
            return Err(Error::invalid_param(
                "head.hidden",
                format!("every hidden width must be >= 1, got {w}"),
            ));
        }
        if self.embedding < 1 {
            return Err(Error::invalid_param(
                "head.embedding",
                format!("must be >= 1, got {}", self.embedding),
            ));
        }
        Ok(())
    }
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self::paper()
    }
}

/// The head's outputs for a batch of `N` feature vectors.
#[derive(Debug)]
pub struct HeadOutput {
    /// `[N, embedding]` linear embedding.
    pub embedding: Tensor,
    /// `[N, num_classes]` class logits.
    pub logits: Tensor,
}

/// MLP head: `hidden.{i}.linear` + `hidden.{i}.bn` + ReLU layers, then `embed` (Linear with
/// bias) and `out` (Linear with bias, the logits), named so under the head's [`nn::Path`].
#[derive(Debug)]
pub struct MlpHead {
    hidden: Vec<(Linear, BatchNorm)>,
    embed: Linear,
    out: Linear,
}

impl MlpHead {
    /// Creates the head's variables under `p` for `num_classes` (≥ 2) logits, seeded.
    pub fn new(p: &nn::Path, config: &HeadConfig, num_classes: i64, seed: u64) -> Result<Self> {
        Self::with_init(p, config, num_classes, &mut Init::new(seed))
    }

    pub(crate) fn with_init(
        p: &nn::Path,
        config: &HeadConfig,
        num_classes: i64,
        init: &mut Init,
    ) -> Result<Self> {
        config.check()?;
        check_num_classes(num_classes)?;
        let mut width = FEATURE_DIM;
        let mut hidden = Vec::with_capacity(config.hidden.len());
        for (i, &w) in config.hidden.iter().enumerate() {
            let hp = p / "hidden" / i;
            let linear = Linear::new(&(&hp / "linear"), init, (width, w), false)?;
            hidden.push((linear, BatchNorm::new(&(&hp / "bn"), w)?));
            width = w;
        }
        let embed = Linear::new(&(p / "embed"), init, (width, config.embedding), true)?;
        let out = Linear::new(&(p / "out"), init, (config.embedding, num_classes), true)?;
        Ok(Self { hidden, embed, out })
    }

    /// Runs the head on `[N, 512]` features; `train` selects BatchNorm's mode.
    pub fn forward_t(&self, features: &Tensor, train: bool) -> Result<HeadOutput> {
        let mut x = features.shallow_clone();
        for (linear, bn) in &self.hidden {
            x = bn.forward_t(&linear.forward(&x)?, train)?.f_relu()?;
        }
        let embedding = self.embed.forward(&x)?;
        let logits = self.out.forward(&embedding)?;
        Ok(HeadOutput { embedding, logits })
    }
}

/// The paper's label sets have 2 (binary), 3 (3-way) or 4 (rotation) classes; any ≥ 2 works.
pub(crate) fn check_num_classes(num_classes: i64) -> Result<()> {
    if num_classes < 2 {
        return Err(Error::invalid_param(
            "num_classes",
            format!(
                "a classifier needs at least 2 classes (2 binary, 3 for 3-way, 4 for rotation), \
                 got {num_classes}"
            ),
        ));
    }
    Ok(())
}
