//! The self-supervised classifier `g` of PAPER.md (ResNet-18 + MLP head) with its variables.
use super::head::{check_num_classes, HeadConfig, MlpHead};
use super::layers::{channels_last, Init};
use super::precision::{Autocast, FastPath, Precision};
use super::resnet::{FeatureMaps, ResNet18};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::{nn, Device, Kind, Tensor};

/// Variable-name prefix of the head in the [`nn::VarStore`] (the backbone sits at the root, so
/// its names are torchvision's).
pub const HEAD_PREFIX: &str = "head";

/// What a [`Classifier`] is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    /// Number of classes of the augmentation label set: 2 (binary), 3 (3-way), 4 (rotation).
    pub num_classes: i64,
    /// The MLP head.
    pub head: HeadConfig,
    /// Precision and memory layout of the forward pass.
    pub fast_path: FastPath,
}

impl ClassifierConfig {
    /// Default head, [`FastPath::auto`] for `device`.
    pub fn new(num_classes: i64, device: Device) -> Self {
        Self {
            num_classes,
            head: HeadConfig::paper(),
            fast_path: FastPath::auto(device),
        }
    }
}

/// Everything one forward pass of the classifier produces.
#[derive(Debug)]
pub struct ClassifierOutput {
    /// Backbone maps and pooled `[N, 512]` features.
    pub maps: FeatureMaps,
    /// `[N, embedding]` head embedding.
    pub embedding: Tensor,
    /// `[N, num_classes]` logits, fp32.
    pub logits: Tensor,
}

/// ResNet-18 backbone + MLP head and the [`nn::VarStore`] holding their variables: backbone
/// variables under torchvision's names (`conv1.weight`, `layer1.0.bn1.running_var`, …), head
/// variables under `head.` (`head.hidden.0.linear.weight`, `head.embed.bias`, `head.out.weight`).
#[derive(Debug)]
pub struct Classifier {
    vs: nn::VarStore,
    backbone: ResNet18,
    head: MlpHead,
    config: ClassifierConfig,
}

impl Classifier {
    /// Builds a randomly initialised classifier (from scratch, as in the paper) on `device`;
    /// the same `seed` gives the same initial weights on every device.
    pub fn new(config: &ClassifierConfig, device: Device, seed: u64) -> Result<Self> {
        Self::with_init(config, device, Init::new(seed))
    }

    /// A classifier whose variables are all zero, for loads and copies that overwrite every
    /// one of them (much faster than drawing the random initialisation).
    pub(crate) fn new_for_load(config: &ClassifierConfig, device: Device) -> Result<Self> {
        Self::with_init(config, device, Init::zeros())
    }

    fn with_init(config: &ClassifierConfig, device: Device, mut init: Init) -> Result<Self> {
        super::device::check_device(device)?;
        check_num_classes(config.num_classes)?;
        config.head.check()?;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let backbone = ResNet18::with_init(&root, &mut init)?;
        let head = MlpHead::with_init(
            &(&root / HEAD_PREFIX),
            &config.head,
            config.num_classes,
            &mut init,
        )?;
        let clf = Self {
            vs,
            backbone,
            head,
            config: config.clone(),
        };
        clf.apply_layout()?;
        Ok(clf)
    }

    /// Converts the convolution weights to the configured memory layout (in place: the
    /// VarStore sees the same tensors).
    fn apply_layout(&self) -> Result<()> {
        if self.config.fast_path.channels_last {
            for w in self.backbone.conv_weights() {
                let mut w = w.shallow_clone();
                let cl = tch::no_grad(|| channels_last(&w))?;
                w.f_set_data(&cl)?;
            }
        }
        Ok(())
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &ClassifierConfig {
        &self.config
    }

    /// The device its variables live on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The variable store (torchvision names for the backbone, `head.` for the head).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The backbone alone.
    pub fn backbone(&self) -> &ResNet18 {
        &self.backbone
    }

    /// Changes precision and layout after construction (e.g. fp32 for feature extraction).
    pub fn set_fast_path(&mut self, fast_path: FastPath) -> Result<()> {
        self.config.fast_path = fast_path;
        self.apply_layout()
    }

    /// All variables by name, sorted (trainable ones and BatchNorm running statistics).
    pub fn named_variables(&self) -> BTreeMap<String, Tensor> {
        self.vs.variables().into_iter().collect()
    }

    /// Trainable variables by name, sorted: the optimizer's parameters.
    pub fn named_parameters(&self) -> BTreeMap<String, Tensor> {
        self.vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect()
    }

    /// Moves the input to the device and layout the network expects.
    fn prepare(&self, images: &Tensor) -> Result<Tensor> {
        let x = images.f_to_device(self.device())?;
        if self.config.fast_path.channels_last {
            channels_last(&x)
        } else {
            Ok(x)
        }
    }

    /// Runs backbone and head on an `[N, 3, H, W]` batch (see [`crate::data::images_to_tensor`])
    /// in the configured precision and layout. `train` selects BatchNorm's mode (batch statistics
    /// when `true`, running statistics for evaluation). Logits come back in fp32.
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Result<ClassifierOutput> {
        let x = self.prepare(images)?;
        let _autocast = Autocast::enter(self.device(), self.config.fast_path.precision)?;
        let maps = self.backbone.forward_maps(&x, train)?;
        let head = self.head.forward_t(&maps.pooled, train)?;
        Ok(ClassifierOutput {
            maps,
            embedding: head.embedding,
            logits: head.logits.f_to_kind(Kind::Float)?,
        })
    }

    /// Pooled `[N, 512]` fp32 backbone features in evaluation mode, without gradients: the
    /// representation the density estimators are fitted on (PAPER.md stage 2), computed in
    /// [`FastPath::feature_precision`] (fp32 on CUDA even when training runs in bf16).
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        let precision = self.config.fast_path.feature_precision(self.device());
        self.features_with(images, precision)
    }

    /// [`features`](Self::features) computed in `precision` (e.g. to compare bf16 and fp32
    /// features of one network).
    pub fn features_with(&self, images: &Tensor, precision: Precision) -> Result<Tensor> {
        let x = self.prepare(images)?;
        if let Some(kind) = self.fused_kind(precision) {
            if let Some(maps) = self.backbone.frozen_forward(&x, kind, true)? {
                let pooled = maps.pooled.ok_or_else(|| {
                    Error::internal("the fused forward asked for pooled features returned none")
                })?;
                return Ok(pooled.f_to_kind(Kind::Float)?);
            }
        }
        tch::no_grad(|| {
            let _autocast = Autocast::enter(self.device(), precision)?;
            self.backbone
                .features(&x, false)?
                .f_to_kind(Kind::Float)
                .map_err(Into::into)
        })
    }

    /// `layer2` and `layer3` maps (fp32, evaluation mode, no gradients) of an `[N, 3, H, W]`
    /// batch in the feature precision ([`FastPath::feature_precision`]) and the configured
    /// layout; see [`ResNet18::forward_mid`].
    pub fn mid_maps(&self, images: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = self.prepare(images)?;
        let precision = self.config.fast_path.feature_precision(self.device());
        if let Some(kind) = self.fused_kind(precision) {
            if let Some(maps) = self.backbone.frozen_forward(&x, kind, false)? {
                return Ok((
                    maps.layer2.f_to_kind(Kind::Float)?,
                    maps.layer3.f_to_kind(Kind::Float)?,
                ));
            }
        }
        tch::no_grad(|| {
            let _autocast = Autocast::enter(self.device(), precision)?;
            let (l2, l3) = self.backbone.forward_mid(&x)?;
            Ok((l2.f_to_kind(Kind::Float)?, l3.f_to_kind(Kind::Float)?))
        })
    }

    /// The precision of the fused inference backbone (`fused`) for features in `precision`, or
    /// `None` where the eager forward runs: off the CPU, for the NCHW reference layout
    /// ([`FastPath::FP32`]), or when the fused backbone is off or unavailable.
    fn fused_kind(&self, precision: Precision) -> Option<Kind> {
        let on = self.device() == Device::Cpu
            && self.config.fast_path.channels_last
            && super::fused_inference();
        on.then_some(match precision {
            Precision::Fp32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
        })
    }

    /// Its configuration and variables, the tensors shared rather than copied, to become a
    /// classifier on another thread ([`SharedClassifier::build`]).
    pub(crate) fn share(&self) -> SharedClassifier {
        SharedClassifier {
            config: self.config.clone(),
            device: self.device(),
            variables: self.named_variables(),
        }
    }

    /// A copy with the same configuration and variables (weights and BatchNorm statistics).
    pub fn try_clone(&self) -> Result<Self> {
        let mut copy = Self::new_for_load(&self.config, self.device())?;
        copy.vs.copy(&self.vs)?;
        Ok(copy)
    }
}

/// A classifier's configuration and variables, sharing the variables' storage
/// ([`Classifier::share`]). `Send`, so it can cross to another thread.
#[derive(Debug)]
pub(crate) struct SharedClassifier {
    config: ClassifierConfig,
    device: Device,
    variables: BTreeMap<String, Tensor>,
}

impl SharedClassifier {
    /// A classifier whose variables use the shared storage (nothing is copied): for reading,
    /// such as scoring on another thread; a change to one's variables is a change to both.
    pub(crate) fn build(self) -> Result<Classifier> {
        let clf = Classifier::new_for_load(&self.config, self.device)?;
        for (name, var) in clf.named_variables() {
            let src = self.variables.get(&name).ok_or_else(|| {
                Error::internal(format!(
                    "variable {name} is missing from a shared classifier"
                ))
            })?;
            let mut var = var;
            tch::no_grad(|| var.f_set_data(src))?;
        }
        Ok(clf)
    }
}
