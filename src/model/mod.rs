//! ResNet-18 backbone, MLP head, classifier and the self-supervised training loop (libtorch).
//!
//! * [`ResNet18`]: typed backbone with torchvision parameter names, pooled 512-d features and the
//!   `layer2`–`layer4` maps ([`FeatureMaps`]); BatchNorm train/eval mode per call.
//! * [`MlpHead`] / [`HeadConfig`]: the head of PAPER.md (**[our choice]** depth and width).
//! * [`Classifier`]: backbone + head + their [`tch::nn::VarStore`], random init from a seed
//!   (the paper trains from scratch) or a pretrained backbone from a torchvision-named
//!   safetensors file ([`Classifier::load_backbone`]); precision and layout via [`FastPath`].
//! * The fused inference backbone (CPU): the features the density is fitted on and scores, and
//!   the localizer's mid-level maps, run with BatchNorm folded into oneDNN convolutions that fuse
//!   the ReLU and the residual sum, on weights prepacked once ([`fused_inference`],
//!   [`set_fused_inference`]; `CUTPASTE_FUSED=0` turns it off). Same function, fp32 within 1e-4
//!   relative; scoring at 256² on an AMX CPU 1.5× the eager bf16 forward when glibc serves
//!   libtorch's allocations, 0–9 % when jemalloc does (docs/results.md).
//! * Fused training BatchNorm kernels (CPU, channels-last): in a training-mode forward, bn1 with
//!   its ReLU and the max-pool, and each residual block's BatchNorm with its ReLU (and residual
//!   sum), run as single autograd functions that pass over the activations fewer times
//!   ([`fused_training`], [`set_fused_training`]; `CUTPASTE_FUSED_TRAIN=0` turns them off). Same
//!   functions, fp32 within 1e-4 relative (docs/results.md).
//! * [`train`]: the training loop (SGD 0.03 / 0.9 / 3e-5, cosine to 0), fed by a
//!   [`BatchSource`] on a background thread, reporting [`Progress`] to a callback, with atomic,
//!   resumable checkpoints; [`Prefetch`] sets how many threads prepare batches ahead.
//! * Device choice: [`resolve_device`] (`auto` = CUDA when this build has it and a GPU is
//!   usable) and [`check_device`], which turns an unusable CUDA device into a one-line
//!   [`Error::DeviceUnavailable`](crate::Error::DeviceUnavailable) naming the cause and the fix.
//!
//! ```no_run
//! use cutpaste::augment::Augmentation;
//! use cutpaste::data::synthetic::{SyntheticKind, SyntheticSpec};
//! use cutpaste::model::{train, Classifier, ClassifierConfig, Control, TrainParams};
//! use cutpaste::pipeline::AugmentSource;
//! use std::sync::Arc;
//! # fn main() -> cutpaste::Result<()> {
//! let device = tch::Device::Cpu;
//! let spec = SyntheticSpec::new(SyntheticKind::Part).side(64);
//! let images = Arc::new((0..16).map(|i| spec.train_image(i)).collect::<Vec<_>>());
//! let augmentation = Augmentation::cutpaste();
//! let config = ClassifierConfig::new(augmentation.num_classes() as i64, device);
//! let mut clf = Classifier::new(&config, device, 0)?;
//! let mut source = AugmentSource::new(images, augmentation, 8, 0)?;
//! let params = TrainParams::paper().steps(100);
//! let report = train(&mut clf, &mut source, &params, |p| {
//!     log::info!("step {}/{} loss {:.3}", p.step, p.steps, p.loss);
//!     Control::Continue
//! })?;
//! let features = clf.features(&tch::Tensor::zeros([1, 3, 64, 64], (tch::Kind::Float, device)))?;
//! assert_eq!(features.size(), vec![1, 512]);
//! # let _ = report; Ok(()) }
//! ```
mod checkpoint;
mod classifier;
mod conv_gemm;
mod device;
mod feed;
mod fused;
mod fused_train;
mod head;
mod io;
mod layers;
mod optim;
pub(crate) mod pace;
mod pool;
mod precision;
mod pretrained;
mod resnet;
mod source;
mod switch;
mod threads;
mod train;

pub use checkpoint::{CHECKPOINT_FORMAT, CHECKPOINT_VERSION, MOMENTUM_PREFIX};
pub(crate) use classifier::SharedClassifier;
pub use classifier::{Classifier, ClassifierConfig, ClassifierOutput, HEAD_PREFIX};
pub use conv_gemm::{conv_gemm, set_conv_gemm, GEMM_POSITIONS, WGRAD_POSITIONS_BF16};
pub use device::{
    check_device, resolve_device, CudaEnv, CudaProblem, DeviceChoice, DeviceRequest,
    CUDA_BUILD_HINT,
};
pub use feed::Prefetch;
pub use fused::{fused_inference, fused_inference_available, set_fused_inference};
pub use fused_train::{fused_training, set_fused_training};
pub use head::{HeadConfig, HeadOutput, MlpHead};
pub(crate) use io::f32_bytes;
pub(crate) use layers::Init;
pub use optim::cosine_lr;
pub use pace::{Replan, PACE_EVERY};
pub use precision::{autocast_enabled, cpu_has_amx, cpu_has_native_bf16, FastPath, Precision};
pub use pretrained::is_ignorable_torchvision_key;
pub(crate) use pretrained::load_weights_skipping;
pub use resnet::{FeatureMaps, ResNet18, FEATURE_DIM, RESNET18_PARAMS};
pub use source::ToySource;
pub use source::{Batch, BatchSource};
#[doc(hidden)]
pub(crate) use threads::ThreadIntraOp;
pub use train::{train, CheckpointPolicy, Control, Progress, TrainParams, TrainReport};
