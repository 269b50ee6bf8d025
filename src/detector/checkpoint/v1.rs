//! Reading format 1 of the detector checkpoint, whose metadata copied the parameters field by
//! field; [`MetaV1::upgrade`] turns it into the current record.
use super::Meta;
use crate::augment::Augmentation;
use crate::data::Normalization;
use crate::density::DensityRecord;
use crate::detector::Calibration;
use crate::localize::LocalizerParams;
use crate::model::{FastPath, HeadConfig, TrainParams};
use crate::pipeline::{Backbone, DetectorParams, ImageScore, StageRecord};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tch::Device;

/// Format 1's metadata (read only): the parameters copied field by field.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct MetaV1 {
    augmentation: Augmentation,
    head: HeadConfig,
    num_classes: i64,
    fast_path: FastPath,
    image_size: u32,
    normalization: Normalization,
    batch_images: usize,
    steps: usize,
    learning_rate: f64,
    momentum: f64,
    weight_decay: f64,
    seed: u64,
    density: DensityRecord,
    threshold: Option<f32>,
    /// How the threshold was set (absent in files written before calibration records).
    #[serde(default)]
    calibration: Option<Calibration>,
    fit_seconds: f64,
    /// The localizer's parameters (absent in files written without one).
    #[serde(default)]
    localizer: Option<LocalizerParams>,
    /// Where the image score comes from (absent in older files: pooled).
    #[serde(default)]
    image_score: ImageScore,
    /// What each training stage planned and did (absent in older files).
    #[serde(default)]
    training_record: Vec<StageRecord>,
}

impl MetaV1 {
    /// The format-2 record of the same detector: the parameters as format 1 restored them.
    pub(super) fn upgrade(self) -> Meta {
        let training = TrainParams::paper()
            .steps(self.steps)
            .learning_rate(self.learning_rate)
            .momentum(self.momentum)
            .weight_decay(self.weight_decay)
            .seed(self.seed)
            .normalization(self.normalization);
        // a negative or huge value (a damaged file) means no budget, never a panic
        let budget = self
            .training_record
            .first()
            .and_then(|r| r.budget_seconds)
            .and_then(|s| Duration::try_from_secs_f64(s).ok());
        let training = match budget {
            Some(b) => training.budget(b),
            None => training,
        };
        let mut params = DetectorParams::default()
            .augmentation(self.augmentation)
            .backbone(Backbone::resnet18())
            .head(self.head)
            .training(training)
            .batch_images(self.batch_images)
            .density(self.density.params())
            .image_size(self.image_size)
            .device(Device::Cpu)
            .fast_path(self.fast_path)
            .image_score(self.image_score)
            .seed(self.seed);
        params.localizer = self.localizer;
        Meta {
            params,
            num_classes: self.num_classes,
            fast_path: self.fast_path,
            density: self.density,
            threshold: self.threshold,
            calibration: self.calibration,
            fit_seconds: self.fit_seconds,
            training_record: self.training_record,
            score_scale: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_1_metadata_without_a_localizer_key_still_parses() {
        let det = DetectorParams::default();
        let meta = MetaV1 {
            augmentation: det.augmentation.clone(),
            head: det.head.clone(),
            num_classes: 3,
            fast_path: FastPath::auto(Device::Cpu),
            image_size: 64,
            normalization: Normalization::IMAGENET,
            batch_images: 2,
            steps: 1,
            learning_rate: 0.03,
            momentum: 0.9,
            weight_decay: 3e-5,
            seed: 0,
            density: crate::density::Density::gaussian()
                .fit(ndarray::Array2::<f32>::eye(4).view())
                .and_then(|d| d.record())
                .unwrap(),
            threshold: None,
            calibration: None,
            fit_seconds: 0.0,
            localizer: Some(LocalizerParams::paper()),
            image_score: ImageScore::Map,
            training_record: vec![],
        };
        let mut json = serde_json::to_value(&meta).unwrap();
        assert!(json["localizer"].is_object());
        // a file written before the localizer existed has no such key
        json.as_object_mut().unwrap().remove("localizer");
        let back: MetaV1 = serde_json::from_value(json).unwrap();
        assert_eq!(back.localizer, None);
        assert_eq!(back.image_size, 64);
        let upgraded = back.upgrade();
        assert_eq!(upgraded.params.input_size(), 64);
        assert_eq!(upgraded.params.training.get_steps(), 1);
        assert_eq!(upgraded.params.image_score, ImageScore::Map);
    }
}
