//! One-file checkpoints of a fitted [`Detector`]: a `.safetensors` file holding the backbone and
//! head under torchvision-style names (`conv1.weight`, `layer1.0.bn1.running_mean`, `head.…`),
//! the density's arrays under `density.` (`density.mean` f64 [512], `density.covariance` f64
//! [512, 512] for the Gaussian) and JSON metadata: `format`, `format_version`, `crate_version`
//! and `params`, whose JSON holds the [`DetectorParams`] the detector was fitted with as one
//! record (`params.params`; serde, see [`DetectorParams`]), the network's class count and fast
//! path, the fitted density's record, the threshold and its
//! [`Calibration`](super::Calibration), the fit time and the training record. A fitted
//! localizer adds its patch classifier under `localizer.net.` (the same torchvision-style
//! names), its PCA basis and Gaussians under `localizer.gauss.` (`pca_mean`, `projection`,
//! `means`, `precisions`, f32), and its fitted parameters are the record's `localizer`; files
//! without them load as detectors without a localizer. Paths that name files on the machine
//! that fitted it (the pretrained backbone, the training checkpoint) are not stored. Written
//! atomically (temporary file + rename).
//!
//! Format 1 (before the parameters were one record: they were copied field by field into the
//! metadata) still loads, as the same detector.
//!
//! Loading trusts nothing in the file: every size the metadata states is checked against the
//! tensors actually present before anything is allocated from it, and the parameters are
//! validated as [`DetectorParams::check`] does.
mod v1;

use super::{Calibration, Detector, ScoreScale};
use crate::density::{ArrayData, DensityRecord, FittedDensity, NamedArray};
use crate::error::{Error, Result};
use crate::localize::{Localizer, LocalizerParams, PatchGaussians};
use crate::model::f32_bytes;
use crate::model::{Classifier, ClassifierConfig, FastPath};
use crate::pipeline::{Backbone, DetectorParams, ImageScore, StageRecord};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tch::Device;
use v1::MetaV1;

/// `format` metadata value of detector checkpoints.
pub const DETECTOR_FORMAT: &str = "cutpaste.detector";
/// Version of the detector checkpoint layout this crate writes; it also reads the earlier
/// version 1.
pub const DETECTOR_FORMAT_VERSION: u32 = 2;
/// The first layout: parameters copied field by field into the metadata ([`MetaV1`]).
const FORMAT_V1: &str = "1";
const DENSITY_PREFIX: &str = "density.";
const LOCALIZER_PREFIX: &str = "localizer.";
const LOCALIZER_NET: &str = "localizer.net.";
const LOCALIZER_GAUSS: &str = "localizer.gauss.";

/// Everything but the tensors, stored as JSON under the `params` metadata key.
///
/// To extend it: a new optional field gets `#[serde(default)]` (files written before it then
/// load with the default), as do new fields of [`DetectorParams`] (whose missing fields take
/// the defaults); a change that older readers must not silently ignore bumps
/// [`DETECTOR_FORMAT_VERSION`] and keeps reading the older versions.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    /// The parameters the detector was fitted with (see [`portable`]).
    params: DetectorParams,
    /// Classes of the classifier's head (the augmentation's label count).
    num_classes: i64,
    /// The fast path the networks run with.
    fast_path: FastPath,
    /// The fitted density's record (its arrays are tensors under `density.`).
    density: DensityRecord,
    /// The decision threshold, if set.
    #[serde(default)]
    threshold: Option<f32>,
    /// How the threshold was set.
    #[serde(default)]
    calibration: Option<Calibration>,
    /// Wall time of the fit, seconds.
    #[serde(default)]
    fit_seconds: f64,
    /// What each training stage planned and did.
    #[serde(default)]
    training_record: Vec<StageRecord>,
    /// [`ImageScore::Combined`]'s statistics (absent for the other image scores).
    #[serde(default)]
    score_scale: Option<ScoreScale>,
}

/// How errors name a checkpoint that was given as bytes rather than read from a file.
const IN_MEMORY: &str = "<checkpoint bytes>";

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl Detector {
    /// The metadata record; [`Error::Unsupported`] for a user-defined density.
    fn meta(&self) -> Result<Meta> {
        let mut params = portable(self.params.clone());
        params.localizer = self.localizer.as_ref().map(|l| l.params().clone());
        params.device = self.classifier.device();
        Ok(Meta {
            params,
            num_classes: self.classifier.config().num_classes,
            fast_path: self.classifier.config().fast_path,
            density: self.density.record()?,
            threshold: self.threshold,
            calibration: self.calibration.clone(),
            fit_seconds: self.fit_time.as_secs_f64(),
            training_record: self.training_record.clone(),
            score_scale: self.score_scale,
        })
    }

    /// The run's parameters as the checkpoint records them (JSON), for reports.
    pub(crate) fn run_info(&self) -> serde_json::Value {
        // a user-defined density has no record: the report then goes without the run's params
        self.meta()
            .ok()
            .and_then(|m| serde_json::to_value(m).ok())
            .unwrap_or_default()
    }

    /// Writes the detector to one `.safetensors` file, atomically. See the module docs.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        crate::atomic_file::write_atomic(path, &self.serialize(path)?)
    }

    /// The bytes [`save`](Self::save) writes (one safetensors file).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.serialize(Path::new(IN_MEMORY))
    }

    /// An independent copy on the same device whose scores equal this detector's (a round trip
    /// through [`to_bytes`](Self::to_bytes)). `Detector` is `Send` but not `Sync` (tch's
    /// `Tensor` is not `Sync`), so this is the way to score from several threads: one copy per
    /// thread. Its [`params_used`](Self::params_used) are those a checkpoint records.
    pub fn try_clone(&self) -> Result<Detector> {
        Self::parse(
            &self.to_bytes()?,
            Path::new(IN_MEMORY),
            self.classifier.device(),
        )
    }

    /// The checkpoint's bytes; errors name `path`.
    fn serialize(&self, path: &Path) -> Result<Vec<u8>> {
        let meta = self.meta()?;
        let json = serde_json::to_string(&meta).map_err(|e| bad(path, e.to_string()))?;
        let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, t) in self.classifier.named_variables() {
            let shape = t.size().iter().map(|&s| s as usize).collect();
            owned.push((name, Dtype::F32, shape, f32_bytes(&t)?));
        }
        if let Some(loc) = &self.localizer {
            for (name, t) in loc.classifier().named_variables() {
                let shape = t.size().iter().map(|&s| s as usize).collect();
                owned.push((
                    format!("{LOCALIZER_NET}{name}"),
                    Dtype::F32,
                    shape,
                    f32_bytes(&t)?,
                ));
            }
        }
        let gauss = self.localizer.as_ref().map(|l| l.gaussians().to_arrays());
        let prefixed = self
            .density
            .to_arrays()?
            .into_iter()
            .map(|a| (DENSITY_PREFIX, a))
            .chain(gauss.into_iter().flatten().map(|a| (LOCALIZER_GAUSS, a)));
        for (prefix, a) in prefixed {
            let (dtype, bytes) = match &a.data {
                ArrayData::F32(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                ArrayData::F64(v) => (Dtype::F64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            };
            owned.push((format!("{prefix}{}", a.name), dtype, a.shape.clone(), bytes));
        }
        let views = owned
            .iter()
            .map(|(n, d, s, b)| {
                TensorView::new(*d, s.clone(), b)
                    .map(|v| (n.as_str(), v))
                    .map_err(|e| bad(path, e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut md = HashMap::new();
        md.insert("format".to_string(), DETECTOR_FORMAT.to_string());
        md.insert(
            "format_version".to_string(),
            DETECTOR_FORMAT_VERSION.to_string(),
        );
        md.insert(
            "crate_version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        );
        md.insert("params".to_string(), json);
        safetensors::tensor::serialize(views, &Some(md)).map_err(|e| bad(path, e.to_string()))
    }

    /// Restores a detector written by [`save`](Self::save) onto `device`; its scores equal the
    /// saved detector's. A truncated or foreign file, another format version, or a missing or
    /// mis-shaped tensor is an [`Error::Checkpoint`] / [`Error::WeightsMismatch`] naming the file.
    pub fn load(path: impl AsRef<Path>, device: Device) -> Result<Detector> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&bytes, path, device)
    }

    /// As [`load`](Self::load), from the bytes of a checkpoint file (e.g. from
    /// [`to_bytes`](Self::to_bytes), `include_bytes!` or object storage); errors name it
    /// `<checkpoint bytes>`.
    pub fn from_bytes(bytes: &[u8], device: Device) -> Result<Detector> {
        Self::parse(bytes, Path::new(IN_MEMORY), device)
    }

    fn parse(bytes: &[u8], path: &Path, device: Device) -> Result<Detector> {
        // the device first: an unusable one is not the checkpoint's fault
        crate::model::check_device(device)?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            bad(path, format!("not a readable safetensors file ({e}); it may be truncated: save the detector again"))
        })?;
        let meta = read_meta(bytes, path)?;
        let mut params = portable(meta.params.clone());
        params.device = device;
        params
            .check()
            .map_err(|e| bad(path, format!("metadata `params` is not valid: {e}")))?;
        // the network the parameters describe, with the fast path it was saved with
        let mut config = params.classifier_config();
        config.fast_path = meta.fast_path;
        if config.num_classes != meta.num_classes {
            return Err(bad(
                path,
                format!(
                    "metadata `num_classes` {} does not match the {} classes of the augmentation \
                     in `params`: the file is damaged; save the detector again",
                    meta.num_classes, config.num_classes
                ),
            ));
        }
        check_head_fits(&config, bytes.len(), path, params.localizer.is_some())?;
        let density = load_density(&st, path, &meta.density)?;
        let mut classifier = new_classifier(&config, path, device)?;
        crate::model::load_weights_skipping(&mut classifier, path, bytes, |k| {
            k.starts_with(DENSITY_PREFIX) || k.starts_with(LOCALIZER_PREFIX)
        })?;
        let localizer = match &params.localizer {
            Some(lp) => Some(load_localizer(&st, path, &config, lp, &params, device)?),
            None => None,
        };
        let mut det = Detector::new(
            classifier,
            density,
            params,
            Duration::try_from_secs_f64(meta.fit_seconds).unwrap_or_default(),
        )
        .with_localizer(localizer)
        .with_training_record(meta.training_record)
        .with_score_scale(meta.score_scale);
        if det.params_used().image_score == ImageScore::Combined
            && !meta.score_scale.is_some_and(|s| s.is_valid())
        {
            return Err(bad(
                path,
                "image_score Combined without a valid score_scale (finite means, sd > 0, pooled_weight \
                 in [0, 1]) in the metadata: the file is damaged; save the detector again",
            ));
        }
        det.threshold = meta.threshold.filter(|t| t.is_finite());
        det.calibration = meta.calibration.filter(|_| det.threshold.is_some());
        Ok(det)
    }
}

/// The `format`, `format_version` and `params` metadata of a detector checkpoint.
fn read_meta(bytes: &[u8], path: &Path) -> Result<Meta> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(path, e.to_string()))?;
    let md = header.metadata().clone().unwrap_or_default();
    match md.get("format").map(String::as_str) {
        Some(DETECTOR_FORMAT) => {}
        other => {
            return Err(bad(
                path,
                format!(
                "not a cutpaste detector checkpoint (format {other:?}); for backbone weights use \
                 Backbone::pretrained, for training checkpoints TrainParams::checkpoint"
            ),
            ))
        }
    }
    let version = md.get("format_version").cloned().unwrap_or_default();
    let json = md.get("params").map(String::as_str).unwrap_or("");
    let invalid = |e: serde_json::Error| bad(path, format!("metadata `params` is not valid: {e}"));
    if version == DETECTOR_FORMAT_VERSION.to_string() {
        serde_json::from_str(json).map_err(invalid)
    } else if version == FORMAT_V1 {
        serde_json::from_str::<MetaV1>(json)
            .map(MetaV1::upgrade)
            .map_err(invalid)
    } else {
        Err(bad(
            path,
            format!(
                "format version {version:?}, but this crate reads versions {FORMAT_V1} to \
                 {DETECTOR_FORMAT_VERSION}; save it again with this crate version"
            ),
        ))
    }
}

/// The parameters without what names files on the machine that fitted the detector: the
/// pretrained backbone (its weights are in the checkpoint) and the training checkpoint.
fn portable(mut params: DetectorParams) -> DetectorParams {
    params.backbone = Backbone::resnet18();
    params.training.checkpoint = None;
    params
}

/// Refuses metadata describing a head (or heads, with a localizer) with more weights than the
/// file can hold, before any of it is allocated.
fn check_head_fits(
    config: &ClassifierConfig,
    file_len: usize,
    path: &Path,
    localizer: bool,
) -> Result<()> {
    let copies = if localizer { 2 } else { 1 };
    let needed = config
        .head
        .weight_count(config.num_classes)
        .and_then(|w| w.checked_mul(4 * copies));
    match needed {
        Some(n) if n <= file_len as u64 => Ok(()),
        _ => Err(bad(
            path,
            format!(
                "metadata `params` describes a head (hidden {:?}, embedding {}, {} classes) \
                 larger than the file's {file_len} bytes; the file is corrupt: save the detector \
                 again",
                config.head.hidden, config.head.embedding, config.num_classes
            ),
        )),
    }
}

/// The classifier a checkpoint's metadata describes, zero-filled for the load that overwrites
/// every variable; metadata that fails the classifier's own parameter checks (a damaged file,
/// e.g. 0 classes) is an [`Error::Checkpoint`] naming the file.
fn new_classifier(config: &ClassifierConfig, path: &Path, device: Device) -> Result<Classifier> {
    Classifier::new_for_load(config, device).map_err(|e| match e {
        Error::InvalidParam { .. } => bad(
            path,
            format!(
                "metadata `params` is not valid: {e}; the file is corrupt: save the detector again"
            ),
        ),
        e => e,
    })
}

fn load_density(
    st: &SafeTensors<'_>,
    path: &Path,
    record: &DensityRecord,
) -> Result<FittedDensity> {
    let arrays = load_arrays(st, path, DENSITY_PREFIX)?;
    let density = FittedDensity::from_arrays(record, &arrays).map_err(|e| {
        bad(
            path,
            format!("density tensors are incomplete or inconsistent: {e}"),
        )
    })?;
    if density.dim() as i64 != crate::model::FEATURE_DIM {
        return Err(bad(
            path,
            format!(
                "the density is fitted on {}-d features but the backbone gives {}; the file is \
                 corrupt: save the detector again",
                density.dim(),
                crate::model::FEATURE_DIM
            ),
        ));
    }
    Ok(density)
}

/// The patch classifier and Gaussians stored under `localizer.`.
fn load_localizer(
    st: &SafeTensors<'_>,
    path: &Path,
    config: &ClassifierConfig,
    lp: &LocalizerParams,
    params: &DetectorParams,
    device: Device,
) -> Result<Localizer> {
    let clf = new_classifier(config, path, device)?;
    for (name, var) in clf.named_variables() {
        let key = format!("{LOCALIZER_NET}{name}");
        let view = st.tensor(&key).map_err(|_| {
            bad(
                path,
                format!("tensor {key} is missing; save the detector again"),
            )
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        if view.dtype() != Dtype::F32 || shape != var.size() {
            return Err(bad(
                path,
                format!(
                    "tensor {key} is {:?} {shape:?}, expected F32 {:?}",
                    view.dtype(),
                    var.size()
                ),
            ));
        }
        let t = tch::Tensor::f_from_data_size(view.data(), &shape, tch::Kind::Float)?;
        let mut var = var;
        tch::no_grad(|| var.f_copy_(&t.f_to_device(device)?))?;
    }
    let arrays = load_arrays(st, path, LOCALIZER_GAUSS)?;
    let gaussians = PatchGaussians::from_arrays(lp.density, &arrays).map_err(|e| {
        bad(
            path,
            format!("localizer tensors are incomplete or inconsistent: {e}"),
        )
    })?;
    Ok(Localizer::from_parts(
        clf,
        gaussians,
        lp.clone(),
        params.image_size,
        params.training.normalization,
    ))
}

/// Every tensor under `prefix`, prefix stripped, as f32/f64 arrays.
fn load_arrays(st: &SafeTensors<'_>, path: &Path, prefix: &str) -> Result<Vec<NamedArray>> {
    let mut arrays = Vec::new();
    for (name, view) in st.tensors() {
        let Some(short) = name.strip_prefix(prefix) else {
            continue;
        };
        let raw = view.data();
        let data = match view.dtype() {
            Dtype::F32 => ArrayData::F32(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            Dtype::F64 => ArrayData::F64(
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
            other => {
                return Err(bad(
                    path,
                    format!("tensor {name} has dtype {other:?}; expected F32 or F64"),
                ))
            }
        };
        arrays.push(NamedArray {
            name: short.to_string(),
            shape: view.shape().to_vec(),
            data,
        });
    }
    Ok(arrays)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TrainParams;

    #[test]
    fn format_2_metadata_fills_missing_fields_with_defaults() {
        // what a file from before a future optional field looks like: the field is absent
        let density = crate::density::Density::gaussian()
            .fit(ndarray::Array2::<f32>::eye(4).view())
            .and_then(|d| d.record())
            .unwrap();
        let json = serde_json::json!({
            "params": {"image_size": 64, "seed": 5, "device": "cpu"},
            "num_classes": 3,
            "fast_path": FastPath::auto(Device::Cpu),
            "density": density,
        });
        let meta: Meta = serde_json::from_value(json).unwrap();
        assert_eq!(meta.params.input_size(), 64);
        assert_eq!(meta.params.seed, 5);
        assert_eq!(meta.params.training, TrainParams::paper());
        assert_eq!((meta.threshold, meta.fit_seconds), (None, 0.0));
        assert!(meta.training_record.is_empty());
    }
}
