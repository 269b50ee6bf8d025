//! The training stem's BatchNorm + ReLU + 3×3/2 max-pool as one CPU autograd function
//! (`csrc/stem.cpp`).
//!
//! ResNet-18's stem output, `[N, 64, H/2, W/2]`, is the network's largest activation, and in a
//! training step libtorch's three kernels (batch-normalise, ReLU, max-pool with int64 indices)
//! and their backwards pass over it about 13 times. The fused function passes over it four
//! times (statistics; normalise, ReLU and pool; two backward passes) and keeps a one-byte window
//! position per pooled value instead of an int64 index. Same function as
//! `max_pool2d(relu(batch_norm(x, training)), 3, 2, 1)`, running statistics included: only the
//! order of the sums differs (fp32: within 1e-4 relative, see the tests); the pool compares the
//! normalised values rounded to the input's precision, as libtorch's kernels do.
//!
//! [`ResNet18::forward_maps`](super::ResNet18::forward_maps) uses it in training mode for
//! contiguous channels-last fp32 or bf16 input on the CPU (the channels-last fast paths);
//! anything else, or `CUTPASTE_FUSED_STEM=0` in the environment, runs libtorch's kernels.
use super::layers::BatchNorm;
use crate::error::{Error, Result};
use std::ffi::CStr;
use std::os::raw::{c_char, c_int};
use std::sync::OnceLock;
use tch::Tensor;
use torch_sys::C_tensor;

extern "C" {
    fn cutpaste_stem_last_error() -> *const c_char;
    fn cutpaste_stem_train(
        x: *const C_tensor,
        gamma: *const C_tensor,
        beta: *const C_tensor,
        running_mean: *const C_tensor,
        running_var: *const C_tensor,
        momentum: f64,
        eps: f64,
        out: *mut *mut C_tensor,
    ) -> c_int;
}

/// Whether the fused stem is on for this process (`CUTPASTE_FUSED_STEM=0` turns it off).
fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("CUTPASTE_FUSED_STEM").map_or(true, |v| v.trim() != "0"))
}

/// `max_pool2d(relu(bn(x)), [3, 3], [2, 2], [1, 1])` in training mode (batch statistics, running
/// statistics updated) as one fused autograd function, or `None` when it does not apply to `x`
/// (then nothing was changed and the caller runs libtorch's kernels).
pub(crate) fn bn_relu_pool_train(bn: &BatchNorm, x: &Tensor) -> Result<Option<Tensor>> {
    if !enabled() || x.device() != tch::Device::Cpu {
        return Ok(None);
    }
    let [gamma, beta, mean, var] = bn.variables();
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: every pointer is a live tch tensor; the shim writes `out` only on success.
    let code = unsafe {
        cutpaste_stem_train(
            x.as_ptr(),
            gamma.as_ptr(),
            beta.as_ptr(),
            mean.as_ptr(),
            var.as_ptr(),
            BatchNorm::MOMENTUM,
            BatchNorm::EPS,
            &mut out,
        )
    };
    match code {
        2 => Ok(None),
        0 if !out.is_null() => {
            // SAFETY: on success the shim allocated `out` with `new at::Tensor`; tch frees it.
            Ok(Some(unsafe { Tensor::from_ptr(out) }))
        }
        _ => {
            // SAFETY: the shim returns a pointer to a thread-local, NUL-terminated string.
            let msg = unsafe { CStr::from_ptr(cutpaste_stem_last_error()) };
            Err(Error::internal(format!(
                "fused training stem: {}",
                msg.to_string_lossy()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::layers::{channels_last, Init};
    use tch::{nn, Kind};

    /// The unfused reference: libtorch's three kernels.
    fn reference(bn: &BatchNorm, x: &Tensor) -> Tensor {
        bn.forward_t(x, true)
            .unwrap()
            .relu()
            .max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)
    }

    /// A BatchNorm with random γ (both signs), β and running statistics.
    fn batch_norm(vs: &nn::VarStore, c: i64, seed: u64) -> BatchNorm {
        let bn = BatchNorm::new(&vs.root(), c).unwrap();
        let mut init = Init::new(seed);
        let [g, b, m, v] = bn.variables();
        tch::no_grad(|| {
            // γ of both signs (a negative one flips which value a window keeps), σ² ≥ 0.5
            for (t, abs, shift) in [
                (g, false, 0.0),
                (b, false, 0.0),
                (m, false, 0.0),
                (v, true, 0.5),
            ] {
                let r = Tensor::from_slice(&init.normal(c as usize, 1.0));
                let r = if abs { r.abs() + shift } else { r };
                t.shallow_clone().copy_(&r);
            }
        });
        bn
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
        let a = a.to_kind(Kind::Double);
        let b = b.to_kind(Kind::Double);
        let scale = b.abs().max().double_value(&[]).max(1e-12);
        (a - b).abs().max().double_value(&[]) / scale
    }

    /// Runs the stem both ways on the same input and upstream gradient and returns
    /// (fused, reference) of: output, dx, dγ, dβ, running mean, running variance.
    fn both(n: i64, c: i64, h: i64, w: i64, kind: Kind) -> [(Tensor, Tensor); 6] {
        let mut init = Init::new(7);
        let numel = (n * c * h * w) as usize;
        let x0 = Tensor::from_slice(&init.normal(numel, 1.5))
            .reshape([n, c, h, w])
            .to_kind(kind)
            + 0.3;
        let x0 = channels_last(&x0).unwrap();
        let (oh, ow) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
        let g = Tensor::from_slice(&init.normal((n * c * oh * ow) as usize, 1.0))
            .reshape([n, c, oh, ow])
            .to_kind(kind);
        let run = |fused: bool| {
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let bn = batch_norm(&vs, c, 3);
            let x = x0.detach().set_requires_grad(true);
            let y = if fused {
                bn_relu_pool_train(&bn, &x)
                    .unwrap()
                    .expect("fused stem applies")
            } else {
                reference(&bn, &x)
            };
            // upstream gradient g
            (y.to_kind(Kind::Float) * g.to_kind(Kind::Float))
                .sum(Kind::Float)
                .backward();
            let [gm, bt, m, v] = bn.variables();
            [
                y.detach(),
                x.grad(),
                gm.grad(),
                bt.grad(),
                m.detach().copy(),
                v.detach().copy(),
            ]
        };
        let (f, r) = (run(true), run(false));
        let mut f = f.into_iter();
        let mut r = r.into_iter();
        std::array::from_fn(|_| (f.next().unwrap(), r.next().unwrap()))
    }

    #[test]
    fn fp32_matches_libtorch_kernels() {
        // odd sizes: windows cut by the padding on both sides
        for (n, c, h, w) in [(3, 5, 9, 7), (2, 16, 8, 10), (1, 3, 2, 3)] {
            let names = [
                "output",
                "dx",
                "dgamma",
                "dbeta",
                "running mean",
                "running var",
            ];
            for ((f, r), name) in both(n, c, h, w, Kind::Float).iter().zip(names) {
                assert_eq!(f.size(), r.size(), "{name}");
                let e = max_rel(f, r);
                assert!(
                    e < 1e-4,
                    "{name} of {:?}: max relative error {e}",
                    (n, c, h, w)
                );
            }
        }
    }

    #[test]
    fn bf16_matches_libtorch_kernels_within_its_rounding() {
        let names = [
            "output",
            "dx",
            "dgamma",
            "dbeta",
            "running mean",
            "running var",
        ];
        for ((f, r), name) in both(4, 8, 12, 11, Kind::BFloat16).iter().zip(names) {
            assert_eq!(f.kind(), r.kind(), "{name}");
            // bf16 keeps 8 bits: the sums in a different order move the last bit
            let e = max_rel(f, r);
            assert!(e < 2e-2, "{name}: max relative error {e}");
        }
    }

    #[test]
    fn does_not_apply_to_nchw_or_double() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let bn = BatchNorm::new(&vs.root(), 4).unwrap();
        let nchw = Tensor::ones([2, 4, 6, 6], (Kind::Float, tch::Device::Cpu));
        assert!(bn_relu_pool_train(&bn, &nchw).unwrap().is_none());
        let double = channels_last(&nchw.to_kind(Kind::Double)).unwrap();
        assert!(bn_relu_pool_train(&bn, &double).unwrap().is_none());
        let [_, _, m, _] = bn.variables();
        assert_eq!(
            m.abs().sum(Kind::Float).double_value(&[]),
            0.0,
            "running mean untouched"
        );
    }
}
