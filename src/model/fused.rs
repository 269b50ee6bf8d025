//! The frozen inference backbone: ResNet-18 in evaluation mode as fused oneDNN convolutions
//! (CPU only), for the features the density is fitted on and scores.
//!
//! In evaluation mode a BatchNorm is a fixed per-channel affine map, so it folds into the
//! convolution before it (weight `w·s`, bias `β − μ·s` with `s = γ/√(σ² + ε)`). The folded
//! convolutions then run as oneDNN primitives with the block's ReLU fused in, and the residual
//! sum of a block accumulated in place into the shortcut (oneDNN's sum post-op), on weights
//! reordered once into oneDNN's blocked layout instead of on every call. The layers, their order
//! and the result are those of [`ResNet18::forward_maps`] in evaluation mode: only the rounding
//! differs (fp32: within 1e-4 relative; bf16: within bf16's rounding, see the tests). Measured on
//! this project's 2-core AMX CPU, scoring image files at 256² in bf16: 1.5× the eager autocast
//! forward when glibc serves libtorch's allocations (it allocates fewer and smaller blocks), 0–9 %
//! faster and ~23 % less peak memory when jemalloc does (docs/results.md).
//!
//! [`Classifier::features_with`](super::Classifier::features_with) and
//! [`Classifier::mid_maps`](super::Classifier::mid_maps) use it on the CPU for channels-last
//! fast paths when libtorch has the oneDNN operators ([`fused_inference_available`]) and it is
//! on ([`set_fused_inference`]; the environment variable `CUTPASTE_FUSED=0` turns it off for
//! the process). The fused weights are cached in the [`ResNet18`] and rebuilt when any of its
//! variables changes (their version counters and storage) or after a training-mode forward
//! (which updates the running statistics in place).
use super::layers::{BatchNorm, Conv2d};
use super::resnet::ResNet18;
use super::switch::Switch;
use crate::error::{Error, Result};
use std::ffi::CStr;
use std::os::raw::{c_char, c_int};
use tch::{Kind, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn cutpaste_fused_available() -> c_int;
    fn cutpaste_fused_last_error() -> *const c_char;
    fn cutpaste_fused_prepack(
        w: *const C_tensor,
        padding: i64,
        stride: i64,
        out: *mut *mut C_tensor,
    ) -> c_int;
    fn cutpaste_fused_conv(
        x: *const C_tensor,
        w: *const C_tensor,
        b: *const C_tensor,
        padding: i64,
        stride: i64,
        relu: c_int,
        out: *mut *mut C_tensor,
    ) -> c_int;
    fn cutpaste_fused_conv_add_relu_(
        acc: *const C_tensor,
        x: *const C_tensor,
        w: *const C_tensor,
        b: *const C_tensor,
        padding: i64,
        stride: i64,
    ) -> c_int;
}

/// Process-wide switch, `CUTPASTE_FUSED=0` turns it off.
static ENABLED: Switch = Switch::new("CUTPASTE_FUSED");

/// True when this libtorch has the oneDNN operators of the fused backbone (x86-64 and aarch64
/// builds of libtorch with oneDNN, such as the PyPI wheels).
pub fn fused_inference_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // SAFETY: no arguments; the function catches every C++ exception.
    *AVAILABLE.get_or_init(|| unsafe { cutpaste_fused_available() } == 1)
}

/// Turns the fused inference backbone on or off for this process (on by default unless the
/// environment variable `CUTPASTE_FUSED` is `0`). Off, features are computed by the eager
/// forward of [`ResNet18::forward_maps`] under the fast path's autocast, as in training.
pub fn set_fused_inference(on: bool) {
    ENABLED.set(on);
}

/// Whether the fused backbone is on and available (see [`set_fused_inference`]).
pub fn fused_inference() -> bool {
    ENABLED.on() && fused_inference_available()
}

/// The error of the last failed shim call on this thread.
fn shim_error(what: &str) -> Error {
    // SAFETY: the shim returns a pointer to a thread-local, NUL-terminated string.
    let msg = unsafe { CStr::from_ptr(cutpaste_fused_last_error()) };
    Error::internal(format!("fused {what}: {}", msg.to_string_lossy()))
}

/// A tensor handed back by the shim (a new `at::Tensor` we now own).
fn owned(ptr: *mut C_tensor, code: c_int, what: &str) -> Result<Tensor> {
    if code != 0 || ptr.is_null() {
        return Err(shim_error(what));
    }
    // SAFETY: on success the shim allocated `ptr` with `new at::Tensor`, which tch frees on drop.
    Ok(unsafe { Tensor::from_ptr(ptr) })
}

/// One convolution with its BatchNorm folded in: prepacked weight, bias, geometry.
#[derive(Debug)]
struct FusedConv {
    weight: Tensor,
    bias: Tensor,
    padding: i64,
    stride: i64,
}

impl FusedConv {
    /// Folds `bn` into `conv` (fp32 arithmetic), casts to `kind` and prepacks the weight.
    fn new(conv: &Conv2d, bn: &BatchNorm, kind: Kind) -> Result<Self> {
        let (scale, shift) = bn.eval_affine()?;
        let (stride, padding) = conv.geometry();
        // [C_out] -> [C_out, 1, 1, 1], broadcast over the weight's [C_out, C_in, k, k]
        let w = conv
            .weight
            .f_to_kind(Kind::Float)?
            .f_mul(&scale.f_view([-1, 1, 1, 1])?)?
            .f_to_kind(kind)?;
        let w = super::layers::channels_last(&w)?;
        let mut packed = std::ptr::null_mut();
        // SAFETY: `w` is a live tensor; the shim writes a new tensor to `packed` on success.
        let code = unsafe { cutpaste_fused_prepack(w.as_ptr(), padding, stride, &mut packed) };
        Ok(Self {
            weight: owned(packed, code, "weight prepacking")?,
            bias: shift.f_to_kind(kind)?,
            padding,
            stride,
        })
    }

    /// `relu?(conv(x) + b)`.
    fn forward(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let mut out = std::ptr::null_mut();
        // SAFETY: all tensors are live; the shim writes a new tensor to `out` on success.
        let code = unsafe {
            cutpaste_fused_conv(
                x.as_ptr(),
                self.weight.as_ptr(),
                self.bias.as_ptr(),
                self.padding,
                self.stride,
                c_int::from(relu),
                &mut out,
            )
        };
        owned(out, code, "convolution")
    }

    /// `acc ← relu(acc + conv(x) + b)`, in place.
    fn add_relu_into(&self, acc: &Tensor, x: &Tensor) -> Result<()> {
        // SAFETY: all tensors are live; `acc` has the convolution's output shape and kind.
        let code = unsafe {
            cutpaste_fused_conv_add_relu_(
                acc.as_ptr(),
                x.as_ptr(),
                self.weight.as_ptr(),
                self.bias.as_ptr(),
                self.padding,
                self.stride,
            )
        };
        if code != 0 {
            return Err(shim_error("residual convolution"));
        }
        Ok(())
    }
}

/// A `BasicBlock` of fused convolutions.
#[derive(Debug)]
struct FusedBlock {
    conv1: FusedConv,
    conv2: FusedConv,
    downsample: Option<FusedConv>,
}

impl FusedBlock {
    /// `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, as `BasicBlock::forward_t`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv1.forward(x, true)?;
        // The shortcut becomes the output: a new tensor, or `x` itself when it is the identity
        // (every such `x` is the previous block's output, which nothing else keeps).
        let acc = match &self.downsample {
            Some(d) => d.forward(x, false)?,
            None => x.shallow_clone(),
        };
        self.conv2.add_relu_into(&acc, &y)?;
        Ok(acc)
    }
}

/// ResNet-18 in evaluation mode with folded, fused, prepacked convolutions in one precision.
#[derive(Debug)]
pub(crate) struct FrozenResNet {
    kind: Kind,
    stem: FusedConv,
    /// `layer1` … `layer4`, two blocks each.
    layers: Vec<[FusedBlock; 2]>,
}

/// What a frozen forward returns, as [`super::FeatureMaps`], in the frozen precision.
pub(crate) struct FrozenMaps {
    pub(crate) layer2: Tensor,
    pub(crate) layer3: Tensor,
    /// `None` when the forward stopped after `layer3`.
    pub(crate) pooled: Option<Tensor>,
}

impl FrozenResNet {
    /// Folds and prepacks `net`'s current weights and running statistics in `kind` (`Float` or
    /// `BFloat16`), without gradients.
    pub(crate) fn new(net: &ResNet18, kind: Kind) -> Result<Self> {
        tch::no_grad(|| {
            let stem = FusedConv::new(&net.conv1, &net.bn1, kind)?;
            let mut layers = Vec::with_capacity(net.layers.len());
            for [b0, b1] in &net.layers {
                layers.push([freeze_block(b0, kind)?, freeze_block(b1, kind)?]);
            }
            Ok(Self { kind, stem, layers })
        })
    }

    /// Runs an `[N, 3, H, W]` batch through `layer1`…`layer3`, and `layer4` plus the global
    /// average pool when `pooled` is set.
    pub(crate) fn forward(&self, x: &Tensor, pooled: bool) -> Result<FrozenMaps> {
        tch::no_grad(|| {
            // [N, 3, H, W] in the frozen precision, NHWC in memory
            let x = super::layers::channels_last(&x.f_to_kind(self.kind)?)?;
            // [N, 64, H/2, W/2] -> [N, 64, H/4, W/4]
            let y = self.stem.forward(&x, true)?;
            let y = super::pool::stem_max_pool(&y)?;
            let layer1 = self.stage(0, &y)?;
            let layer2 = self.stage(1, &layer1)?;
            let layer3 = self.stage(2, &layer2)?;
            let pooled = if pooled {
                // [N, 512, h, w] -> [N, 512]
                let layer4 = self.stage(3, &layer3)?;
                Some(layer4.f_mean_dim(&[2i64, 3][..], false, None::<Kind>)?)
            } else {
                None
            };
            Ok(FrozenMaps {
                layer2,
                layer3,
                pooled,
            })
        })
    }

    fn stage(&self, i: usize, x: &Tensor) -> Result<Tensor> {
        let [b0, b1] = &self.layers[i];
        b1.forward(&b0.forward(x)?)
    }
}

fn freeze_block(b: &super::resnet::BasicBlock, kind: Kind) -> Result<FusedBlock> {
    Ok(FusedBlock {
        conv1: FusedConv::new(&b.conv1, &b.bn1, kind)?,
        conv2: FusedConv::new(&b.conv2, &b.bn2, kind)?,
        downsample: match &b.downsample {
            Some((conv, bn)) => Some(FusedConv::new(conv, bn, kind)?),
            None => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Classifier, ClassifierConfig, FastPath};
    use tch::Device;

    /// A classifier with non-trivial BatchNorm variables (random γ, β, μ, σ²), so that folding
    /// them is tested, on the fp32 channels-last path.
    fn classifier() -> Classifier {
        let mut config = ClassifierConfig::new(3, Device::Cpu);
        config.fast_path = FastPath {
            precision: crate::model::Precision::Fp32,
            channels_last: true,
        };
        let clf = Classifier::new(&config, Device::Cpu, 7).unwrap();
        tch::manual_seed(3);
        tch::no_grad(|| {
            for (name, mut t) in clf.named_variables() {
                let n = t.size()[0];
                let new = if name.ends_with("running_var")
                    || name.contains("bn") && name.ends_with("weight")
                {
                    Tensor::rand([n], (Kind::Float, Device::Cpu)) + 0.5
                } else if name.ends_with("running_mean")
                    || name.contains("bn") && name.ends_with("bias")
                {
                    Tensor::rand([n], (Kind::Float, Device::Cpu)) * 0.2 - 0.1
                } else {
                    continue;
                };
                t.copy_(&new);
            }
        });
        clf
    }

    fn input(n: i64, side: i64) -> Tensor {
        tch::manual_seed(5);
        Tensor::randn([n, 3, side, side], (Kind::Float, Device::Cpu))
    }

    /// max |a − b| / max |b|
    fn rel(a: &Tensor, b: &Tensor) -> f64 {
        let a = a.to_kind(Kind::Float);
        let b = b.to_kind(Kind::Float);
        (a - &b).abs().max().double_value(&[]) / b.abs().max().double_value(&[])
    }

    /// Whether the fused backbone can run here; says so when not (the test is then skipped).
    fn fused_here() -> bool {
        let here = fused_inference_available();
        if !here {
            eprintln!("skipped: this libtorch has no oneDNN fused convolutions");
        }
        here
    }

    fn eager(clf: &Classifier, x: &Tensor) -> super::super::FeatureMaps {
        tch::no_grad(|| clf.backbone().forward_maps(x, false)).unwrap()
    }

    #[test]
    fn the_backbone_with_its_fused_cache_stays_send() {
        fn send<T: Send>() {}
        send::<ResNet18>();
        send::<Classifier>();
        send::<crate::Detector>();
    }

    #[test]
    fn fp32_fused_forward_matches_the_eager_one() {
        if !fused_here() {
            return;
        }
        let clf = classifier();
        let x = input(3, 72);
        let want = eager(&clf, &x);
        let got = clf
            .backbone()
            .frozen_forward(&x, Kind::Float, true)
            .unwrap()
            .expect("fused forward");
        assert_eq!(got.layer2.size(), want.layer2.size());
        assert_eq!(got.layer3.size(), want.layer3.size());
        assert!(
            rel(&got.layer2, &want.layer2) < 1e-4,
            "{}",
            rel(&got.layer2, &want.layer2)
        );
        assert!(rel(&got.layer3, &want.layer3) < 1e-4);
        let pooled = got.pooled.expect("pooled");
        assert_eq!(pooled.size(), vec![3, 512]);
        assert!(
            rel(&pooled, &want.pooled) < 1e-4,
            "{}",
            rel(&pooled, &want.pooled)
        );
        // Without `pooled` the forward stops after layer3, with the same maps.
        let mid = clf
            .backbone()
            .frozen_forward(&x, Kind::Float, false)
            .unwrap()
            .unwrap();
        assert!(mid.pooled.is_none());
        assert_eq!(rel(&mid.layer3, &got.layer3), 0.0);
    }

    #[test]
    fn bf16_fused_forward_is_within_bf16_rounding_of_fp32() {
        if !fused_here() {
            return;
        }
        let clf = classifier();
        let x = input(2, 64);
        let want = eager(&clf, &x).pooled;
        let Some(got) = clf
            .backbone()
            .frozen_forward(&x, Kind::BFloat16, true)
            .unwrap()
        else {
            eprintln!("skipped: no bf16 convolutions on this CPU");
            return;
        };
        let got = got.pooled.unwrap().to_kind(Kind::Float);
        // relative L2 error: bf16 keeps 8 significant bits (0.4 %) per rounding
        let err = (&got - &want).norm().double_value(&[]) / want.norm().double_value(&[]);
        assert!(err < 0.03, "relative error {err}");
    }

    #[test]
    fn the_fused_weights_follow_every_change_of_the_variables() {
        if !fused_here() {
            return;
        }
        let clf = classifier();
        let x = input(2, 64);
        let fused = |clf: &Classifier| {
            clf.backbone()
                .frozen_forward(&x, Kind::Float, true)
                .unwrap()
                .unwrap()
                .pooled
                .unwrap()
        };
        let before = fused(&clf);
        // 1. A training-mode forward updates the running statistics in place.
        let _ = clf.backbone().forward_maps(&input(4, 64), true).unwrap();
        let after_train = fused(&clf);
        assert!(
            rel(&after_train, &before) > 1e-3,
            "unchanged after a training forward"
        );
        assert!(rel(&after_train, &eager(&clf, &x).pooled) < 1e-4);
        // 2. A weight changed in place (as an optimizer step or loading does).
        tch::no_grad(|| {
            let mut w = clf.named_variables()["layer4.1.conv2.weight"].shallow_clone();
            let _ = w.f_mul_scalar_(1.5).unwrap();
        });
        let after_step = fused(&clf);
        assert!(
            rel(&after_step, &after_train) > 1e-3,
            "unchanged after a weight update"
        );
        assert!(rel(&after_step, &eager(&clf, &x).pooled) < 1e-4);
    }
}
