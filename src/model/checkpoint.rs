//! Training checkpoints: one safetensors file with the classifier's variables under their own
//! names (torchvision names for the backbone), the optimizer's momentum buffers under
//! `optimizer.momentum.<name>`, and in its metadata the format version, crate version, the
//! number of completed steps, the schedule and the classifier's shape. Written atomically.
use super::classifier::Classifier;
use super::io::{write_atomic, StFile};
use super::optim::Sgd;
use super::train::TrainParams;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// `format` metadata value of a training checkpoint.
pub const CHECKPOINT_FORMAT: &str = "cutpaste.train-checkpoint";
/// `format_version` metadata value this crate writes and reads.
pub const CHECKPOINT_VERSION: &str = "1";
/// Name prefix of the momentum buffers in a checkpoint.
pub const MOMENTUM_PREFIX: &str = "optimizer.momentum.";

/// What must be equal for a resumed run to continue the interrupted one exactly.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Schedule {
    steps: usize,
    learning_rate: f64,
    momentum: f64,
    weight_decay: f64,
    seed: u64,
    num_classes: i64,
    head: super::head::HeadConfig,
}

impl Schedule {
    fn of(params: &TrainParams, clf: &Classifier) -> Self {
        Self {
            steps: params.steps,
            learning_rate: params.learning_rate,
            momentum: params.momentum,
            weight_decay: params.weight_decay,
            seed: params.seed,
            num_classes: clf.config().num_classes,
            head: clf.config().head.clone(),
        }
    }
}

fn json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v)
        .map_err(|e| Error::internal(format!("shape of `checkpoint metadata`: {e}")))
}

/// The variables and momentum buffers, by checkpoint name.
fn state(clf: &Classifier, sgd: &Sgd) -> BTreeMap<String, tch::Tensor> {
    let mut tensors = clf.named_variables();
    for (name, buf) in &sgd.momentum_buffers {
        tensors.insert(format!("{MOMENTUM_PREFIX}{name}"), buf.shallow_clone());
    }
    tensors
}

/// Writes the state after `step` completed steps to `path` (temporary file + rename).
pub(crate) fn save(
    path: &Path,
    clf: &Classifier,
    sgd: &Sgd,
    step: usize,
    params: &TrainParams,
) -> Result<()> {
    let mut meta = HashMap::new();
    meta.insert("format".into(), CHECKPOINT_FORMAT.into());
    meta.insert("format_version".into(), CHECKPOINT_VERSION.into());
    meta.insert("crate_version".into(), env!("CARGO_PKG_VERSION").into());
    meta.insert("step".into(), step.to_string());
    meta.insert("schedule".into(), json(&Schedule::of(params, clf))?);
    write_atomic(path, &state(clf, sgd), meta)?;
    log::info!("checkpoint after step {step} written to {}", path.display());
    Ok(())
}

/// Restores variables and momentum buffers from `path`; returns the number of completed steps.
pub(crate) fn load(
    path: &Path,
    clf: &Classifier,
    sgd: &Sgd,
    params: &TrainParams,
) -> Result<usize> {
    let bad = |reason: String| Error::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let file = StFile::read(path)?;
    let meta = file.metadata()?;
    let get = |k: &str| meta.get(k).map(String::as_str).unwrap_or("");
    if get("format") != CHECKPOINT_FORMAT {
        return Err(bad(format!(
            "not a cutpaste training checkpoint (format `{}`); point the checkpoint path at a \
             file written by model::train, or turn resume off",
            get("format")
        )));
    }
    if get("format_version") != CHECKPOINT_VERSION {
        return Err(bad(format!(
            "format version `{}`, this crate reads `{CHECKPOINT_VERSION}`; retrain or use the \
             crate version that wrote it ({})",
            get("format_version"),
            get("crate_version")
        )));
    }
    let want = json(&Schedule::of(params, clf))?;
    if get("schedule") != want {
        return Err(bad(format!(
            "written for schedule {} but resuming with {want}; resume with the same steps, \
             learning rate, momentum, weight decay, seed and classifier, or start afresh",
            get("schedule")
        )));
    }
    let step: usize = get("step")
        .parse()
        .map_err(|_| bad(format!("unreadable step count `{}`", get("step"))))?;
    file.load_into(&state(clf, sgd), |_| false)?;
    log::info!("resumed from {} after step {step}", path.display());
    Ok(step)
}
