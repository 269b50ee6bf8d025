//! ResNet-18 (He et al. 2016) as a typed struct whose variables carry torchvision's
//! `state_dict` names (`conv1.weight`, `bn1.running_mean`, `layer1.0.conv1.weight`,
//! `layer2.0.downsample.0.weight`, …; the classifier `fc` is not part of the backbone).
//!
//! PAPER.md, "Training": the backbone is ResNet-18 trained from scratch; its global-average-pooled
//! 512-d output is the representation the density estimator is fitted on.
use super::fused::{FrozenMaps, FrozenResNet};
use super::layers::{BatchNorm, Conv2d, Init};
use crate::error::{Error, Result};
use std::sync::{Mutex, MutexGuard};
use tch::{nn, Kind, Tensor};

/// Width of the pooled ResNet-18 feature vector.
pub const FEATURE_DIM: i64 = 512;

/// Number of ResNet-18 parameters without `fc` (trainable weights and biases, not BatchNorm
/// running statistics): 11,176,512, as torchvision's `resnet18()` minus its 513,000 `fc` ones.
pub const RESNET18_PARAMS: usize = 11_176_512;

/// A torchvision `BasicBlock`: two 3×3 convolutions with a residual connection.
#[derive(Debug)]
pub(super) struct BasicBlock {
    pub(super) conv1: Conv2d,
    pub(super) bn1: BatchNorm,
    pub(super) conv2: Conv2d,
    pub(super) bn2: BatchNorm,
    /// `downsample.0` (1×1 conv) and `downsample.1` (BatchNorm) when the shape changes.
    pub(super) downsample: Option<(Conv2d, BatchNorm)>,
}

impl BasicBlock {
    fn new(p: &nn::Path, init: &mut Init, c_in: i64, c_out: i64, stride: i64) -> Result<Self> {
        let downsample = if stride != 1 || c_in != c_out {
            let d = p / "downsample";
            Some((
                Conv2d::new(&(&d / "0"), init, (c_in, c_out, 1), stride, 0)?,
                BatchNorm::new(&(&d / "1"), c_out)?,
            ))
        } else {
            None
        };
        Ok(Self {
            conv1: Conv2d::new(&(p / "conv1"), init, (c_in, c_out, 3), stride, 1)?,
            bn1: BatchNorm::new(&(p / "bn1"), c_out)?,
            conv2: Conv2d::new(&(p / "conv2"), init, (c_out, c_out, 3), 1, 1)?,
            bn2: BatchNorm::new(&(p / "bn2"), c_out)?,
            downsample,
        })
    }

    /// The block's output; in fused training with its twin for a second consumer when `twin`.
    fn forward_t(&self, x: &Fork, mode: Mode, twin: bool) -> Result<Fork> {
        let y = bn_relu(
            &self.bn1,
            &conv(&self.conv1, &x.main, mode)?,
            None,
            mode,
            false,
        )?
        .main;
        let shortcut = match &self.downsample {
            Some((c, bn)) => bn.forward_t(&conv(c, &x.shortcut, mode)?, mode.train())?,
            None => x.shortcut.shallow_clone(),
        };
        bn_relu(
            &self.bn2,
            &conv(&self.conv2, &y, mode)?,
            Some(&shortcut),
            mode,
            twin,
        )
    }
}

/// An activation read by a block's two paths: `main` by its first convolution, `shortcut` by
/// the identity or the downsampling convolution. The same values; in fused training the two
/// outputs of the fused function that made it (see `fused_train::Outputs`), so that its backward
/// adds their gradients where it reads them instead of autograd's extra pass over the activation.
struct Fork {
    main: Tensor,
    shortcut: Tensor,
}

impl Fork {
    /// One tensor read by both paths (autograd adds the two gradients).
    fn plain(y: Tensor) -> Self {
        Self {
            shortcut: y.shallow_clone(),
            main: y,
        }
    }

    fn of((y, twin): super::fused_train::Outputs) -> Self {
        match twin {
            Some(shortcut) => Self { main: y, shortcut },
            None => Self::plain(y),
        }
    }
}

/// BatchNorm's mode in a forward.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Running statistics.
    Eval,
    /// Batch statistics, running statistics updated.
    Train,
    /// As `Train`, with the fused training kernels and batched convolution products where they
    /// apply: a channels-last input (see `fused_train.rs`, `conv_gemm.rs`).
    TrainFused,
}

impl Mode {
    /// `train`'s mode for a forward of the batch `x`.
    fn of(x: &Tensor, train: bool) -> Self {
        let stride = x.stride();
        match train {
            false => Mode::Eval,
            true if stride.len() == 4 && stride[1] == 1 => Mode::TrainFused,
            true => Mode::Train,
        }
    }

    fn train(self) -> bool {
        self != Mode::Eval
    }
}

/// `c.forward(x)`; in training as batched products where they apply (see
/// `conv_gemm.rs`).
fn conv(c: &Conv2d, x: &Tensor, mode: Mode) -> Result<Tensor> {
    if mode == Mode::TrainFused {
        if let Some(y) = super::conv_gemm::conv_train(c, x)? {
            return Ok(y);
        }
    }
    c.forward(x)
}

/// `relu(bn(x) + residual)`, or `relu(bn(x))` without a residual; in training one fused
/// function where it applies (see `fused_train.rs`), with a twin output when `twin`.
fn bn_relu(
    bn: &BatchNorm,
    x: &Tensor,
    residual: Option<&Tensor>,
    mode: Mode,
    twin: bool,
) -> Result<Fork> {
    if mode == Mode::TrainFused {
        if let Some(y) = super::fused_train::bn_relu_train(bn, x, residual, twin)? {
            return Ok(Fork::of(y));
        }
    }
    let y = bn.forward_t(x, mode.train())?;
    let y = match residual {
        Some(r) => y.f_add(r)?,
        None => y,
    };
    Ok(Fork::plain(y.f_relu()?))
}

/// The outputs of one ResNet-18 forward pass that later stages use.
///
/// For an `[N, 3, H, W]` input: `layer2` is `[N, 128, H/8, W/8]`, `layer3` `[N, 256, H/16,
/// W/16]`, `layer4` `[N, 512, H/32, W/32]` (sizes rounded up), `pooled` `[N, 512]`.
#[derive(Debug)]
pub struct FeatureMaps {
    /// Output of `layer2` (stride 8).
    pub layer2: Tensor,
    /// Output of `layer3` (stride 16).
    pub layer3: Tensor,
    /// Output of `layer4` (stride 32), e.g. the GradCAM target layer.
    pub layer4: Tensor,
    /// Global-average-pooled `layer4`, `[N, 512]`: the representation of PAPER.md stage 2.
    pub pooled: Tensor,
}

/// ResNet-18 backbone with torchvision parameter names, without `fc`.
///
/// Built under an [`nn::Path`] so that its variables in the [`nn::VarStore`] are named exactly as
/// in torchvision's `resnet18().state_dict()` (relative to that path). Initialisation follows
/// torchvision: Kaiming-normal (fan-out, ReLU) convolutions, BatchNorm weight 1 and bias 0,
/// drawn from a seeded ChaCha8 stream, so the same seed gives the same weights on every device.
#[derive(Debug)]
pub struct ResNet18 {
    pub(super) conv1: Conv2d,
    pub(super) bn1: BatchNorm,
    /// `layer1` … `layer4`, two blocks each.
    pub(super) layers: Vec<[BasicBlock; 2]>,
    /// The fused inference copy of the weights (`super::fused`), built on first use.
    frozen: Mutex<Option<FrozenCache>>,
}

/// A fused copy and the state of the variables it was folded from.
#[derive(Debug)]
struct FrozenCache {
    stamp: Vec<(i64, usize)>,
    kind: Kind,
    /// `None` when building it failed (the eager forward is used; not retried for this stamp).
    net: Option<FrozenResNet>,
}

impl ResNet18 {
    /// Creates the backbone's variables under `p`, initialised from `seed`.
    pub fn new(p: &nn::Path, seed: u64) -> Result<Self> {
        let mut init = Init::new(seed);
        Self::with_init(p, &mut init)
    }

    pub(crate) fn with_init(p: &nn::Path, init: &mut Init) -> Result<Self> {
        let conv1 = Conv2d::new(&(p / "conv1"), init, (3, 64, 7), 2, 3)?;
        let bn1 = BatchNorm::new(&(p / "bn1"), 64)?;
        let mut layers = Vec::with_capacity(4);
        let mut c_in = 64;
        for (i, c_out) in [64i64, 128, 256, 512].into_iter().enumerate() {
            let lp = p / format!("layer{}", i + 1);
            let stride = if i == 0 { 1 } else { 2 };
            let b0 = BasicBlock::new(&(&lp / "0"), init, c_in, c_out, stride)?;
            let b1 = BasicBlock::new(&(&lp / "1"), init, c_out, c_out, 1)?;
            layers.push([b0, b1]);
            c_in = c_out;
        }
        Ok(Self {
            conv1,
            bn1,
            layers,
            frozen: Mutex::new(None),
        })
    }

    /// The convolution weights (for the channels-last conversion).
    pub(crate) fn conv_weights(&self) -> Vec<&Tensor> {
        let mut w = vec![&self.conv1.weight];
        for block in self.layers.iter().flatten() {
            w.push(&block.conv1.weight);
            w.push(&block.conv2.weight);
            if let Some((conv, _)) = &block.downsample {
                w.push(&conv.weight);
            }
        }
        w
    }

    /// Every variable: convolution weights and BatchNorm weights, biases and running statistics.
    fn variables(&self) -> Vec<&Tensor> {
        let mut v = self.conv_weights();
        v.extend(self.bn1.variables());
        for b in self.layers.iter().flatten() {
            v.extend(b.bn1.variables());
            v.extend(b.bn2.variables());
            if let Some((_, bn)) = &b.downsample {
                v.extend(bn.variables());
            }
        }
        v
    }

    /// Version counter and storage address of every variable: changes when any is updated in
    /// place (optimizer steps, loading, copying) or replaced (`set_data`).
    fn stamp(&self) -> Result<Vec<(i64, usize)>> {
        self.variables()
            .into_iter()
            .map(|t| Ok((t.f_internal_version()?, t.data_ptr() as usize)))
            .collect()
    }

    fn frozen_cache(&self) -> MutexGuard<'_, Option<FrozenCache>> {
        self.frozen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The evaluation-mode forward of [`Self::forward_maps`] (pooled features when `pooled`,
    /// else only through `layer3`) by the fused backbone in `kind` (see `fused`), or `None`
    /// when it cannot run here, in which case the caller runs the eager forward. The fused
    /// weights are folded once and rebuilt when the variables change.
    pub(crate) fn frozen_forward(
        &self,
        x: &Tensor,
        kind: Kind,
        pooled: bool,
    ) -> Result<Option<FrozenMaps>> {
        check_input(x)?;
        let stamp = self.stamp()?;
        // Held through the forward: the fused weights are not shared across threads (tch
        // tensors are `Send` but not `Sync`), and libtorch already uses every core for one.
        let mut cache = self.frozen_cache();
        let fresh = cache
            .as_ref()
            .is_some_and(|c| c.kind == kind && c.stamp == stamp);
        if !fresh {
            let net = FrozenResNet::new(self, kind)
                .inspect_err(|e| {
                    log::warn!("fused inference backbone unavailable, using the eager one: {e}")
                })
                .ok();
            *cache = Some(FrozenCache { stamp, kind, net });
        }
        let Some(net) = cache.as_ref().and_then(|c| c.net.as_ref()) else {
            return Ok(None);
        };
        match net.forward(x, pooled) {
            Ok(maps) => Ok(Some(maps)),
            Err(e) => {
                log::warn!("fused inference forward failed, using the eager one: {e}");
                Ok(None)
            }
        }
    }

    /// Runs the backbone on an `[N, 3, H, W]` batch and returns the `layer2`–`layer4` maps and
    /// the pooled features. `train` selects BatchNorm's mode: batch statistics (and running
    /// statistics updated) when `true`, running statistics when `false` (evaluation).
    pub fn forward_maps(&self, x: &Tensor, train: bool) -> Result<FeatureMaps> {
        check_input(x)?;
        if train {
            // The running statistics change in place without a version bump.
            *self.frozen_cache() = None;
        }
        let mode = Mode::of(x, train);
        let y = self.stem(x, mode)?;
        let layer1 = self.stage(0, &y, mode, true)?;
        let layer2 = self.stage(1, &layer1, mode, true)?;
        let layer3 = self.stage(2, &layer2, mode, true)?;
        let layer4 = self.stage(3, &layer3, mode, false)?.main;
        let (layer2, layer3) = (layer2.main, layer3.main);
        // [N, 512, h, w] -> [N, 512, 1, 1] -> [N, 512]
        let pooled = layer4.f_adaptive_avg_pool2d([1, 1])?.f_flatten(1, -1)?;
        Ok(FeatureMaps {
            layer2,
            layer3,
            layer4,
            pooled,
        })
    }

    /// conv1, bn1, ReLU and the max-pool: `[N, 3, H, W]` -> `[N, 64, H/4, W/4]`. In training
    /// the last three run as one fused function where it applies (see `fused_train.rs`).
    fn stem(&self, x: &Tensor, mode: Mode) -> Result<Fork> {
        // [N, 3, H, W] -> [N, 64, H/2, W/2]
        let y = self.conv1.forward(x)?;
        if mode == Mode::TrainFused {
            if let Some(pooled) = super::fused_train::bn_relu_pool_train(&self.bn1, &y)? {
                return Ok(Fork::plain(pooled));
            }
        }
        let y = self.bn1.forward_t(&y, mode.train())?.f_relu()?;
        // [N, 64, H/2, W/2] -> [N, 64, H/4, W/4]
        Ok(Fork::plain(y.f_max_pool2d(
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 1],
            false,
        )?))
    }

    /// `layer2` `[N, 128, H/8, W/8]` and `layer3` `[N, 256, H/16, W/16]` of an `[N, 3, H, W]`
    /// batch in evaluation mode, without running `layer4` (the dense mid-level features of
    /// [`crate::localize::FeatureMode::Dense`]; PAPER.md Table 3 uses intermediate levels too).
    pub fn forward_mid(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        check_input(x)?;
        let y = self.stem(x, Mode::Eval)?;
        let layer2 = self.stage(1, &self.stage(0, &y, Mode::Eval, false)?, Mode::Eval, false)?;
        let layer3 = self.stage(2, &layer2, Mode::Eval, false)?;
        Ok((layer2.main, layer3.main))
    }

    /// `layer{i+1}`: its two blocks (the output with a twin when `twin`, for the next stage).
    fn stage(&self, i: usize, x: &Fork, mode: Mode, twin: bool) -> Result<Fork> {
        let [b0, b1] = &self.layers[i];
        b1.forward_t(&b0.forward_t(x, mode, true)?, mode, twin)
    }

    /// Pooled 512-d features, `[N, 512]`, of an `[N, 3, H, W]` batch (see [`Self::forward_maps`]).
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.forward_maps(x, train)?.pooled)
    }
}

/// Rejects anything but a non-empty `[N, 3, H, W]` batch with a message saying what to pass.
fn check_input(x: &Tensor) -> Result<()> {
    let size = x.size();
    if size.len() != 4 || size[1] != 3 || size.contains(&0) {
        return Err(Error::invalid_input(
            "images",
            format!(
                "expected a non-empty [N, 3, H, W] batch of RGB images, got shape {size:?}; \
                 convert images with data::images_to_tensor"
            ),
        ));
    }
    Ok(())
}
