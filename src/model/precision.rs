//! Numeric precision and memory layout of the forward pass (the CPU fast path of DESIGN.md).
//!
//! * [`Precision::Bf16`] runs the forward pass under libtorch **autocast** to bfloat16:
//!   convolutions and matrix products compute in bf16, the weights stay fp32 ("master weights")
//!   and so do the gradients the optimizer sees. tch's own `autocast` only switches CUDA, so the
//!   CPU switch lives in a small C++ shim (`csrc/autocast.cpp`, compiled by `build.rs`).
//! * Channels-last stores activations and convolution weights NHWC in memory, the layout oneDNN
//!   (CPU) and cuDNN (GPU) convolutions are fastest with.
//!
//! [`FastPath::auto`] picks what is fastest on the device at hand, by a fixed rule per CPU feature
//! (no timing at run time, so the same seed gives the same path, and the same scores, on the
//! same machine every time):
//!
//! | device | rule | measured |
//! |---|---|---|
//! | CPU with AMX (`amx_bf16`) | bf16 autocast + channels-last | training, 96 views a step: 3.6× fp32 channels-last at 256², 1.29× at 64² (`cargo bench --bench train`, docs/results.md) |
//! | any other CPU | fp32 + channels-last | training at 256², 96 views a step: 1.66× fp32 NCHW on an AVX-512 CPU without BF16; 1.28× fp32 NCHW and 1.10× bf16 + channels-last on an AVX512-BF16 CPU without AMX (`cargo bench --bench train`, docs/results.md) |
//! | CUDA | bf16 autocast + channels-last | not yet run on a GPU (docs/gpu.md) |
//!
//! The pooled features the density is fitted on and scores ([`FastPath::feature_precision`])
//! are fp32 on CUDA whatever the training precision: they cost a negligible share of the run,
//! and bf16 features round every feature to 8 significant bits (docs/gpu.md has the measured
//! effect on AUROC and scores). By default libtorch lets cuDNN run fp32 convolutions in TF32 on
//! Ampere and newer GPUs (10-bit mantissa, fp32 accumulation; PyTorch's default too). On a CPU
//! the features follow [`FastPath::precision`] where it has native bf16, else they are fp32.
//!
//! Without AMX, bf16 is emulated (no AVX512-BF16: ~3.6× *slower* than fp32) or computed by
//! AVX512-BF16 dot products that, with the conversions, are still slower than fp32 for training
//! (10.7 vs 11.8 img/s at 256², 157 vs 168 at 64²).
//! Channels-last fp32 lets oneDNN use its blocked NHWC convolutions instead of reordering every
//! activation. On the CPU, the evaluation-mode features of a channels-last path are computed by
//! the fused inference backbone (`fused.rs`: BatchNorm folded, ReLU and residual sums fused,
//! weights prepacked), in [`FastPath::feature_precision`], without autocast. fp32 channels-last and fp32 NCHW compute the same sums in a different order:
//! features agree to ~1e-5 relative (`tests/model.rs` checks scores within 1e-3 relative).
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::os::raw::c_int;
use tch::Device;

/// Arithmetic precision of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Precision {
    /// Everything in fp32.
    Fp32,
    /// bf16 autocast (mixed precision) with fp32 master weights.
    Bf16,
}

/// Precision and memory layout of the network's forward pass.
///
/// All paths compute the same function; what differs is rounding. Tested tolerances for one
/// set of weights (`tests/model.rs`): fp32 channels-last agrees with fp32 NCHW within 1e-4 per
/// logit and 1e-4 relative per Gaussian anomaly score; bf16 within 0.1 per logit and 5 %
/// relative per score, ranking images alike (Spearman ρ ≥ 0.9). So a checkpoint scores alike
/// on any machine. Two detectors *trained* on different paths are different detectors: rounding
/// differences change the SGD trajectory (on a 6-image toy set their scores differed by up to
/// 34 %), as two seeds do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FastPath {
    /// Arithmetic precision.
    pub precision: Precision,
    /// Keep convolution weights and activations channels-last (NHWC in memory).
    pub channels_last: bool,
}

impl FastPath {
    /// Plain fp32, default (NCHW) layout: the reference configuration.
    pub const FP32: FastPath = FastPath {
        precision: Precision::Fp32,
        channels_last: false,
    };

    /// The fastest configuration for `device` (see the module docs for the rule and the
    /// measurements): bf16 + channels-last on CUDA and on CPUs with AMX ([`cpu_has_amx`]);
    /// fp32 + channels-last on every other CPU.
    pub fn auto(device: Device) -> Self {
        keep_cuda_linked();
        let bf16 = match device {
            Device::Cpu => cpu_has_amx(),
            Device::Cuda(_) => true,
            _ => false,
        };
        FastPath {
            precision: if bf16 {
                Precision::Bf16
            } else {
                Precision::Fp32
            },
            channels_last: matches!(device, Device::Cpu | Device::Cuda(_)),
        }
    }

    /// Precision of the pooled features the density is fitted on and scores (see the module
    /// docs): fp32 on CUDA, where they cost a negligible fraction of the run; on the CPU
    /// [`precision`](Self::precision) where the CPU has native bf16 ([`cpu_has_native_bf16`],
    /// 3–4× faster inference), else fp32 (emulated bf16 is slower and less exact), so a detector
    /// trained in bf16 on a GPU scores in fp32 on an ordinary CPU.
    pub fn feature_precision(&self, device: Device) -> Precision {
        match device {
            Device::Cpu if cpu_has_native_bf16() => self.precision,
            _ => Precision::Fp32,
        }
    }
}

/// True when this CPU has AMX bf16 tile instructions (Linux: the `amx_bf16` flag of
/// `/proc/cpuinfo`; false elsewhere), where oneDNN's bf16 convolutions beat fp32.
pub fn cpu_has_amx() -> bool {
    static AMX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AMX.get_or_init(|| {
        std::fs::read_to_string("/proc/cpuinfo")
            .map(|s| s.split_whitespace().any(|w| w == "amx_bf16"))
            .unwrap_or(false)
    })
}

/// True when this x86-64 CPU has native bf16 dot products (AVX512-BF16, which every AMX CPU also
/// has). Without it oneDNN emulates bf16 and mixed precision is slower than fp32.
pub fn cpu_has_native_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

extern "C" {
    fn cutpaste_autocast_enter(
        device: c_int,
        dtype: c_int,
        prev_enabled: *mut c_int,
        prev_dtype: *mut c_int,
    ) -> c_int;
    fn cutpaste_autocast_exit(device: c_int, prev_enabled: c_int, prev_dtype: c_int) -> c_int;
    fn cutpaste_autocast_is_enabled(device: c_int) -> c_int;
    #[cfg(feature = "cuda")]
    fn cutpaste_cuda_link_anchor() -> *const std::ffi::c_void;
}

/// Keeps `libtorch_cuda` linked into binaries built with the `cuda` feature (see build.rs).
#[cfg(feature = "cuda")]
pub(crate) fn keep_cuda_linked() {
    // SAFETY: returns a function address; nothing is called or dereferenced.
    std::hint::black_box(unsafe { cutpaste_cuda_link_anchor() });
}

/// Without the `cuda` feature there is nothing to keep.
#[cfg(not(feature = "cuda"))]
pub(crate) fn keep_cuda_linked() {}

/// `c10::ScalarType::BFloat16` (tch keeps its own code conversion private).
const SCALAR_TYPE_BF16: c_int = 15;

/// c10::DeviceType codes.
fn device_code(device: Device) -> Result<c_int> {
    match device {
        Device::Cpu => Ok(0),
        Device::Cuda(_) => Ok(1),
        other => Err(Error::invalid_param(
            "precision",
            format!("bf16 autocast is supported on CPU and CUDA only, not {other:?}; use Precision::Fp32"),
        )),
    }
}

/// Autocast region for the calling thread: enabled on creation, restored on drop.
#[derive(Debug)]
pub(crate) struct Autocast {
    device: c_int,
    prev_enabled: c_int,
    prev_dtype: c_int,
}

impl Autocast {
    /// Enters a bf16 autocast region on `device` when `precision` is [`Precision::Bf16`];
    /// returns `None` (nothing to undo) for fp32.
    pub(crate) fn enter(device: Device, precision: Precision) -> Result<Option<Self>> {
        if precision == Precision::Fp32 {
            return Ok(None);
        }
        let code = device_code(device)?;
        let (mut prev_enabled, mut prev_dtype) = (0, 0);
        // SAFETY: plain C function writing two ints through valid pointers; exceptions are
        // caught on the C++ side and reported as a non-zero return.
        let rc = unsafe {
            cutpaste_autocast_enter(code, SCALAR_TYPE_BF16, &mut prev_enabled, &mut prev_dtype)
        };
        if rc != 0 {
            return Err(Error::invalid_param(
                "precision",
                "libtorch refused to enable bf16 autocast on this device; use Precision::Fp32",
            ));
        }
        Ok(Some(Self {
            device: code,
            prev_enabled,
            prev_dtype,
        }))
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: plain C function; exceptions are caught on the C++ side.
        let rc = unsafe { cutpaste_autocast_exit(self.device, self.prev_enabled, self.prev_dtype) };
        if rc != 0 {
            log::warn!("leaving the autocast region failed; autocast state may be stale");
        }
    }
}

/// Whether autocast is on for `device` on the calling thread (for tests and diagnostics).
pub fn autocast_enabled(device: Device) -> bool {
    match device_code(device) {
        // SAFETY: plain C function; exceptions are caught on the C++ side.
        Ok(code) => unsafe { cutpaste_autocast_is_enabled(code) == 1 },
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn autocast_region_computes_matmul_in_bf16_and_restores_state() {
        let a = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
        assert!(!autocast_enabled(Device::Cpu));
        {
            let _outer = Autocast::enter(Device::Cpu, Precision::Bf16)
                .unwrap()
                .unwrap();
            assert!(autocast_enabled(Device::Cpu));
            assert_eq!(a.matmul(&a).kind(), Kind::BFloat16);
            {
                let _inner = Autocast::enter(Device::Cpu, Precision::Bf16).unwrap();
            }
            // The inner region restores the outer one's state, not "off".
            assert!(autocast_enabled(Device::Cpu));
        }
        assert!(!autocast_enabled(Device::Cpu));
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
        assert!(Autocast::enter(Device::Cpu, Precision::Fp32)
            .unwrap()
            .is_none());
    }

    #[test]
    fn density_features_are_fp32_on_cuda_and_bf16_only_on_native_bf16_cpus() {
        let bf16 = FastPath {
            precision: Precision::Bf16,
            channels_last: true,
        };
        assert_eq!(bf16.feature_precision(Device::Cuda(0)), Precision::Fp32);
        assert_eq!(
            FastPath::FP32.feature_precision(Device::Cuda(1)),
            Precision::Fp32
        );
        assert_eq!(
            FastPath::FP32.feature_precision(Device::Cpu),
            Precision::Fp32
        );
        let cpu = bf16.feature_precision(Device::Cpu);
        assert_eq!(cpu == Precision::Bf16, cpu_has_native_bf16());
        assert_eq!(
            FastPath::auto(Device::Cuda(0)).precision,
            Precision::Bf16,
            "training on CUDA stays bf16 autocast"
        );
    }

    #[test]
    fn auto_is_channels_last_and_bf16_only_with_amx() {
        let f = FastPath::auto(Device::Cpu);
        assert!(f.channels_last);
        assert_eq!(f.precision == Precision::Bf16, cpu_has_amx());
    }
}
