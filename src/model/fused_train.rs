//! Fused training BatchNorm kernels: a training-mode BatchNorm and what follows it as one CPU
//! autograd function, for channels-last fp32 or bf16 activations.
//!
//! libtorch runs batch norm, the residual sum, the ReLU and the max-pool as separate kernels,
//! each reading and writing the whole activation, and its backwards again; on the CPU these
//! memory passes cost a quarter of a ResNet-18 training step. Two functions replace them:
//!
//! * the stem (`csrc/stem.cpp`): bn1, its ReLU and the 3×3/2 max-pool on ResNet-18's largest
//!   activation, `[N, 64, H/2, W/2]`; libtorch's kernels pass over it about 13 times a step, the
//!   fused function 4 times (statistics; normalise, ReLU and pool; two backward passes) and keeps
//!   a one-byte window position per pooled value instead of an int64 index;
//! * a residual block's BatchNorms (`csrc/bn_act.cpp`): `relu(bn1(x))` and
//!   `relu(bn2(x) + shortcut)`, with the shortcut's gradient written in the backward's last pass;
//!   the block's output can come twice (`Outputs`) for the next block's convolution and
//!   shortcut, whose two gradients the backward then adds itself.
//!
//! Same functions as libtorch's kernels, running statistics included: only the order of the sums
//! differs (fp32: within 1e-4 relative, see the tests); values are rounded to the input's
//! precision where libtorch's separate kernels round them (bf16 under autocast).
//!
//! [`ResNet18::forward_maps`](super::ResNet18::forward_maps) uses them in training mode for a
//! channels-last batch (the channels-last fast paths) on the CPU when they apply (contiguous
//! channels-last fp32 or bf16 activations); an NCHW batch, anything else, or the kernels turned off ([`set_fused_training`]; `CUTPASTE_FUSED_TRAIN=0` in the
//! environment), runs libtorch's kernels.
use super::layers::BatchNorm;
use super::switch::Switch;
use crate::error::{Error, Result};
use std::ffi::CStr;
use std::os::raw::{c_char, c_int};
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
    fn cutpaste_bn_act_last_error() -> *const c_char;
    fn cutpaste_bn_act_train(
        x: *const C_tensor,
        gamma: *const C_tensor,
        beta: *const C_tensor,
        running_mean: *const C_tensor,
        running_var: *const C_tensor,
        residual: *const C_tensor,
        momentum: f64,
        eps: f64,
        out: *mut *mut C_tensor,
        out2: *mut *mut C_tensor,
    ) -> c_int;
}

static ENABLED: Switch = Switch::new("CUTPASTE_FUSED_TRAIN");

/// Turns the fused training BatchNorm kernels on or off for this process (on by default unless
/// the environment variable `CUTPASTE_FUSED_TRAIN` is `0`). Off, training runs libtorch's
/// BatchNorm, sum, ReLU and max-pool kernels; the function and the trained models are the same up
/// to rounding.
pub fn set_fused_training(on: bool) {
    ENABLED.set(on);
}

/// Whether the fused training BatchNorm kernels are on (see [`set_fused_training`]).
pub fn fused_training() -> bool {
    ENABLED.on()
}

/// A shim's result: `Some(tensor)` on success (code 0), `None` when the kernel does not apply
/// (code 2), else the shim's message.
pub(super) fn shim_result(
    code: c_int,
    out: *mut C_tensor,
    last_error: unsafe extern "C" fn() -> *const c_char,
    what: &str,
) -> Result<Option<Tensor>> {
    match code {
        2 => Ok(None),
        // SAFETY: on success the shim allocated `out` with `new at::Tensor`; tch frees it.
        0 if !out.is_null() => Ok(Some(unsafe { Tensor::from_ptr(out) })),
        _ => Err(shim_error(last_error, what)),
    }
}

/// A shim's failure as our error: `what` and the shim's message.
pub(super) fn shim_error(last_error: unsafe extern "C" fn() -> *const c_char, what: &str) -> Error {
    // SAFETY: the shims return a pointer to a thread-local, NUL-terminated string.
    let msg = unsafe { CStr::from_ptr(last_error()) };
    Error::internal(format!("{what}: {}", msg.to_string_lossy()))
}

/// A fused function's output, and with `twin` asked for, the same output again for a second
/// consumer: a tensor on the same memory whose gradient the function's backward adds to the
/// first's where it reads them, instead of autograd's separate pass (`twin()` in
/// `csrc/bn_kernels.h`).
pub(crate) type Outputs = (Tensor, Option<Tensor>);

/// The shim's second output when it was asked for and the call succeeded.
fn with_twin(y: Option<Tensor>, out2: *mut C_tensor) -> Option<Outputs> {
    y.map(|y| {
        // SAFETY: on success the shim allocated `out2` with `new at::Tensor` when it was asked
        // for one (non-null pointer); tch frees it.
        let twin = (!out2.is_null()).then(|| unsafe { Tensor::from_ptr(out2) });
        (y, twin)
    })
}

/// `max_pool2d(relu(bn(x)), [3, 3], [2, 2], [1, 1])` in training mode (batch statistics, running
/// statistics updated) as one fused autograd function, or `None` when it does not apply to `x`
/// (then nothing was changed and the caller runs libtorch's kernels). No twin output: its
/// backward reads each pooled gradient up to 2.25 times a pass, so adding a second one there
/// costs more than autograd's single pass (measured: `dz_row` 2.9 -> 5.6 % of a 256² step).
pub(crate) fn bn_relu_pool_train(bn: &BatchNorm, x: &Tensor) -> Result<Option<Tensor>> {
    if !fused_training() || x.device() != tch::Device::Cpu {
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
    shim_result(code, out, cutpaste_stem_last_error, "fused training stem")
}

/// `relu(bn(x) + residual)` (`relu(bn(x))` without a residual) in training mode as one fused
/// autograd function (with its twin when `twin`, see [`Outputs`]), or `None` when it does not
/// apply (then nothing was changed).
pub(crate) fn bn_relu_train(
    bn: &BatchNorm,
    x: &Tensor,
    residual: Option<&Tensor>,
    twin: bool,
) -> Result<Option<Outputs>> {
    if !fused_training() || x.device() != tch::Device::Cpu {
        return Ok(None);
    }
    let [gamma, beta, mean, var] = bn.variables();
    let res = residual.map_or(std::ptr::null(), |r| r.as_ptr());
    let mut out: *mut C_tensor = std::ptr::null_mut();
    let mut out2: *mut C_tensor = std::ptr::null_mut();
    let out2_ptr: *mut *mut C_tensor = if twin {
        &mut out2
    } else {
        std::ptr::null_mut()
    };
    // SAFETY: every pointer is a live tch tensor or null (no residual, no twin); the shim writes
    // `out` (and `out2` when asked for) only on success.
    let code = unsafe {
        cutpaste_bn_act_train(
            x.as_ptr(),
            gamma.as_ptr(),
            beta.as_ptr(),
            mean.as_ptr(),
            var.as_ptr(),
            res,
            BatchNorm::MOMENTUM,
            BatchNorm::EPS,
            &mut out,
            out2_ptr,
        )
    };
    let y = shim_result(
        code,
        out,
        cutpaste_bn_act_last_error,
        "fused training batch norm",
    )?;
    Ok(with_twin(y, out2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::layers::{channels_last, Init};
    use tch::{nn, Kind};

    /// Which fused function a test runs.
    #[derive(Clone, Copy, Debug)]
    enum Op {
        /// `max_pool(relu(bn(x)))`
        Stem,
        /// `relu(bn(x))`
        Relu,
        /// `relu(bn(x) + r)`
        AddRelu,
    }

    /// The fused function, or libtorch's kernels (the reference) when `!fused`: its output and
    /// what a second consumer reads (the fused function's twin when `twin`, else the output).
    fn forward(
        op: Op,
        fused: bool,
        twin: bool,
        bn: &BatchNorm,
        x: &Tensor,
        r: &Tensor,
    ) -> (Tensor, Tensor) {
        if fused {
            let y = match op {
                Op::Stem => bn_relu_pool_train(bn, x).map(|y| y.map(|y| (y, None))),
                Op::Relu => bn_relu_train(bn, x, None, twin),
                Op::AddRelu => bn_relu_train(bn, x, Some(r), twin),
            };
            let (y, second) = y.unwrap().expect("the fused kernel applies");
            let twin = twin && !matches!(op, Op::Stem);
            assert_eq!(second.is_some(), twin, "a twin exactly when asked for");
            let second = second.unwrap_or_else(|| y.shallow_clone());
            return (y, second);
        }
        let y = bn.forward_t(x, true).unwrap();
        let y = match op {
            Op::Stem => y.relu().max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false),
            Op::Relu => y.relu(),
            Op::AddRelu => (y + r).relu(),
        };
        (y.shallow_clone(), y)
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

    /// A channels-last `[n, c, h, w]` tensor of N(shift, 1.5²) values.
    fn input(init: &mut Init, dims: [i64; 4], kind: Kind, shift: f64) -> Tensor {
        let numel = dims.iter().product::<i64>() as usize;
        let t = Tensor::from_slice(&init.normal(numel, 1.5))
            .reshape(dims)
            .to_kind(kind)
            + shift;
        channels_last(&t).unwrap()
    }

    /// Runs `op` fused and as libtorch's kernels on the same input, residual and upstream
    /// gradient (with `twin`: two consumers, the fused function's twin output and the
    /// reference's output again, with a second upstream gradient); returns (name, fused,
    /// reference) of the output, the gradients (dx, dγ, dβ and the residual's) and the running
    /// statistics.
    fn both(
        op: Op,
        [n, c, h, w]: [i64; 4],
        kind: Kind,
        twin: bool,
    ) -> Vec<(&'static str, Tensor, Tensor)> {
        let mut init = Init::new(7);
        let x0 = input(&mut init, [n, c, h, w], kind, 0.3);
        let r0 = input(&mut init, [n, c, h, w], kind, -0.2);
        let (oh, ow) = match op {
            Op::Stem => ((h - 1) / 2 + 1, (w - 1) / 2 + 1),
            _ => (h, w),
        };
        let g = input(&mut init, [n, c, oh, ow], kind, 0.0);
        let g2 = input(&mut init, [n, c, oh, ow], kind, 0.5);
        let run = |fused: bool| {
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let bn = batch_norm(&vs, c, 3);
            let x = x0.detach().set_requires_grad(true);
            let r = r0.detach().set_requires_grad(true);
            let (y, second) = forward(op, fused, twin, &bn, &x, &r);
            // upstream gradient g (and g2 through the second consumer)
            let mut loss = (y.to_kind(Kind::Float) * g.to_kind(Kind::Float)).sum(Kind::Float);
            if twin {
                if fused {
                    assert_eq!(
                        second.data_ptr(),
                        y.data_ptr(),
                        "the twin shares the memory"
                    );
                }
                loss += (second.to_kind(Kind::Float) * g2.to_kind(Kind::Float)).sum(Kind::Float);
            }
            loss.backward();
            let [gm, bt, m, v] = bn.variables();
            let mut out = vec![
                ("output", y.detach()),
                ("dx", x.grad()),
                ("dgamma", gm.grad()),
                ("dbeta", bt.grad()),
                ("running mean", m.detach().copy()),
                ("running var", v.detach().copy()),
            ];
            if let Op::AddRelu = op {
                out.push(("dresidual", r.grad()));
            }
            out
        };
        let (f, r) = (run(true), run(false));
        f.into_iter()
            .zip(r)
            .map(|((name, f), (_, r))| (name, f, r))
            .collect()
    }

    #[test]
    fn fp32_matches_libtorch_kernels() {
        // odd sizes: pooling windows cut by the padding on both sides
        for op in [Op::Stem, Op::Relu, Op::AddRelu] {
            for (dims, twin) in [
                ([3, 5, 9, 7], false),
                ([2, 16, 8, 10], false),
                ([1, 3, 2, 3], false),
                ([3, 5, 9, 7], true),
                ([1, 3, 2, 3], true),
            ] {
                for (name, f, r) in both(op, dims, Kind::Float, twin) {
                    assert_eq!(f.size(), r.size(), "{op:?} {name}");
                    assert!(f.defined() && r.defined(), "{op:?} {name}");
                    let e = max_rel(&f, &r);
                    assert!(
                        e < 1e-4,
                        "{op:?} {name} of {dims:?} (twin {twin}): max relative error {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn bf16_matches_libtorch_kernels_within_its_rounding() {
        for op in [Op::Stem, Op::Relu, Op::AddRelu] {
            for twin in [false, true] {
                for (name, f, r) in both(op, [4, 8, 12, 11], Kind::BFloat16, twin) {
                    assert_eq!(f.kind(), r.kind(), "{op:?} {name}");
                    // bf16 keeps 8 bits: the sums in a different order move the last bit
                    let e = max_rel(&f, &r);
                    assert!(
                        e < 2e-2,
                        "{op:?} {name} (twin {twin}): max relative error {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn does_not_apply_to_nchw_double_or_a_mismatched_residual() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let bn = BatchNorm::new(&vs.root(), 4).unwrap();
        let nchw = Tensor::ones([2, 4, 6, 6], (Kind::Float, tch::Device::Cpu));
        let cl = channels_last(&nchw).unwrap();
        let double = channels_last(&nchw.to_kind(Kind::Double)).unwrap();
        for x in [&nchw, &double] {
            assert!(bn_relu_pool_train(&bn, x).unwrap().is_none());
            assert!(bn_relu_train(&bn, x, None, false).unwrap().is_none());
        }
        // a residual of another layout or shape
        assert!(bn_relu_train(&bn, &cl, Some(&nchw), true)
            .unwrap()
            .is_none());
        let small = channels_last(&Tensor::ones([2, 4, 3, 3], (Kind::Float, tch::Device::Cpu)));
        assert!(bn_relu_train(&bn, &cl, Some(&small.unwrap()), false)
            .unwrap()
            .is_none());
        let [_, _, m, _] = bn.variables();
        assert_eq!(
            m.abs().sum(Kind::Float).double_value(&[]),
            0.0,
            "running mean untouched"
        );
    }
}
