//! Weights files: pretrained backbone initialisation (PAPER.md Table 3: ImageNet-pretrained
//! instead of from scratch) and saving/loading a classifier's weights.
use super::checkpoint::MOMENTUM_PREFIX;
use super::classifier::{Classifier, HEAD_PREFIX};
use super::io::{write_atomic, StFile};
use crate::error::Result;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Tensors of a torchvision `resnet18().state_dict()` that the backbone has no variable for and
/// that are skipped without complaint: the ImageNet classifier `fc` and BatchNorm's
/// `num_batches_tracked` counters.
pub fn is_ignorable_torchvision_key(name: &str) -> bool {
    name == "fc.weight" || name == "fc.bias" || name.ends_with(".num_batches_tracked")
}

impl Classifier {
    /// Initialises the backbone from a safetensors file with torchvision `resnet18` names, e.g.
    /// `safetensors.torch.save_file(torchvision.models.resnet18(weights=…).state_dict(), p)`.
    /// The head keeps its initialisation. All-or-nothing: a missing, unexpected or mis-shaped
    /// tensor is one [`crate::Error::WeightsMismatch`] listing every problem, and nothing is
    /// changed; an unreadable or truncated file is [`crate::Error::Checkpoint`].
    pub fn load_backbone(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let file = StFile::read(path)?;
        let head = format!("{HEAD_PREFIX}.");
        let backbone: BTreeMap<String, _> = self
            .named_variables()
            .into_iter()
            .filter(|(name, _)| !name.starts_with(&head))
            .collect();
        file.load_into(&backbone, is_ignorable_torchvision_key)?;
        log::info!("loaded backbone weights from {}", path.display());
        Ok(())
    }

    /// Writes every variable (backbone under torchvision names, head under `head.`) to a
    /// safetensors file, atomically (temporary file + rename).
    pub fn save_weights(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "cutpaste.classifier".to_string());
        meta.insert(
            "crate_version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        );
        write_atomic(path.as_ref(), &self.named_variables(), meta)
    }

    /// Loads weights written by [`Self::save_weights`] or a training checkpoint (its optimizer
    /// state is skipped), or any file with exactly this network's names and shapes; mismatches
    /// are one [`crate::Error::WeightsMismatch`].
    pub fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let file = StFile::read(path.as_ref())?;
        file.load_into(&self.named_variables(), |k| k.starts_with(MOMENTUM_PREFIX))
    }
}

/// Loads every variable of `classifier` from `bytes` of a safetensors file (named `path` in
/// errors), ignoring tensors for which `skip` is true (e.g. a detector checkpoint's density
/// arrays).
pub(crate) fn load_weights_skipping(
    classifier: &mut Classifier,
    path: &Path,
    bytes: &[u8],
    skip: impl Fn(&str) -> bool,
) -> Result<()> {
    let file = StFile::new(path, std::borrow::Cow::Borrowed(bytes))?;
    file.load_into(&classifier.named_variables(), skip)
}
