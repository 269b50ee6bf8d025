//! Convolution weight gradients as one matrix product over the batch, for the convolutions whose
//! outputs have few positions.
//!
//! oneDNN's CPU weight-gradient kernels reduce over each image's output positions: where a layer's
//! output has few of them (ResNet-18's layer4 is 2×2 when training on 64² crops, 8×8 at 256²)
//! each image's product is tiny and the weight gradient takes 3–4× its forward's time. The
//! function of `csrc/conv_wgrad.cpp` keeps libtorch's forward and input gradient and computes
//! the weight gradient as `dyᵀ · patches(x)` over the whole batch (one AMX bf16 or fp32 GEMM):
//!
//! | layer, 96 views (bf16, AMX CPU) | oneDNN | one product |
//! |---|---|---|
//! | 512→512 3×3 at 2×2 (layer4 at 64²) | 27.6 ms | 1.9 ms |
//! | 512→512 3×3 at 8×8 (layer4 at 256²) | 140 ms | 86 ms |
//! | 64→64 3×3 at 16×16 (layer1 at 64²) | 2.5 ms | 6.6 ms |
//!
//! So it is used where the output has at most [`MAX_POSITIONS_BF16`] positions in bf16 and
//! [`MAX_POSITIONS_FP32`] in fp32 (where the GEMM gains less: 512→512 at 2×2, 33 ms against 9
//! ms; at 4×4 level), for channels-last batches on the CPU in training mode. The gradient is the
//! same sum in another order (bf16: rounded once, as oneDNN's). [`set_mm_weight_grad`] or
//! `CUTPASTE_MM_WGRAD=0` turns it off.
use super::fused_train::shim_result;
use super::layers::Conv2d;
use crate::error::Result;
use std::os::raw::{c_char, c_int};
use std::sync::atomic::{AtomicU8, Ordering};
use tch::{Kind, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn cutpaste_conv_wgrad_last_error() -> *const c_char;
    fn cutpaste_conv_wgrad_train(
        x: *const C_tensor,
        w: *const C_tensor,
        stride: i64,
        pad: i64,
        out: *mut *mut C_tensor,
    ) -> c_int;
}

/// Output positions (Ho·Wo) up to which a bf16 convolution's weight gradient is one product.
pub const MAX_POSITIONS_BF16: i64 = 64;
/// Output positions (Ho·Wo) up to which an fp32 convolution's weight gradient is one product.
pub const MAX_POSITIONS_FP32: i64 = 4;

/// 0: not decided yet (read `CUTPASTE_MM_WGRAD`), 1: on, 2: off.
static ENABLED: AtomicU8 = AtomicU8::new(0);

/// Turns the batched weight gradients on or off for this process (on by default unless the
/// environment variable `CUTPASTE_MM_WGRAD` is `0`). Off, every convolution's weight gradient is
/// oneDNN's; the trained models are the same up to rounding.
pub fn set_mm_weight_grad(on: bool) {
    ENABLED.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

/// Whether the batched weight gradients are on (see [`set_mm_weight_grad`]).
pub fn mm_weight_grad() -> bool {
    if ENABLED.load(Ordering::Relaxed) == 0 {
        let off = std::env::var("CUTPASTE_MM_WGRAD").is_ok_and(|v| v.trim() == "0");
        let state = if off { 2 } else { 1 };
        let _ = ENABLED.compare_exchange(0, state, Ordering::Relaxed, Ordering::Relaxed);
    }
    ENABLED.load(Ordering::Relaxed) == 1
}

/// Whether a convolution of `x` with a `k`×`k` kernel gets the batched weight gradient.
fn applies(x: &Tensor, k: i64, (stride, pad): (i64, i64)) -> bool {
    let size = x.size();
    if size.len() != 4 || stride < 1 {
        return false;
    }
    let out = |n: i64| (n + 2 * pad - k) / stride + 1;
    let positions = out(size[2]) * out(size[3]);
    let max = match x.kind() {
        Kind::BFloat16 => MAX_POSITIONS_BF16,
        Kind::Float => MAX_POSITIONS_FP32,
        _ => return false,
    };
    positions >= 1 && positions <= max
}

/// `conv.forward(x)` in training mode with the batched weight gradient, or `None` when it does
/// not apply (off, not the CPU, too many output positions, weights not trained, an input the
/// function does not take); then nothing was done and the caller runs libtorch's convolution.
pub(crate) fn conv_train(conv: &Conv2d, x: &Tensor) -> Result<Option<Tensor>> {
    let w = &conv.weight;
    let geometry = conv.geometry();
    if !mm_weight_grad()
        || x.device() != tch::Device::Cpu
        || !w.requires_grad()
        || !applies(x, w.size().last().copied().unwrap_or(0), geometry)
    {
        return Ok(None);
    }
    // Under bf16 autocast (the crate's only autocast dtype) conv2d runs on the bf16 weight.
    let cast;
    let w = if x.kind() == Kind::BFloat16 && w.kind() == Kind::Float {
        if !super::autocast_enabled(tch::Device::Cpu) {
            return Ok(None);
        }
        cast = w.f_to_kind(Kind::BFloat16)?;
        &cast
    } else {
        w
    };
    batched(x, w, geometry)
}

/// The shim's convolution (any size, no policy); `None` when it does not take the input.
fn batched(x: &Tensor, w: &Tensor, (stride, pad): (i64, i64)) -> Result<Option<Tensor>> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: both pointers are live tch tensors; the shim writes `out` only on success.
    let code = unsafe { cutpaste_conv_wgrad_train(x.as_ptr(), w.as_ptr(), stride, pad, &mut out) };
    shim_result(
        code,
        out,
        cutpaste_conv_wgrad_last_error,
        "batched weight gradient",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::layers::Init;
    use crate::model::precision::Autocast;
    use crate::model::Precision;
    use tch::nn;

    fn channels_last(t: Tensor) -> Tensor {
        crate::model::layers::channels_last(&t).unwrap()
    }

    fn normal(init: &mut Init, dims: &[i64], kind: Kind) -> Tensor {
        let numel = dims.iter().product::<i64>() as usize;
        Tensor::from_slice(&init.normal(numel, 1.0))
            .reshape(dims)
            .to_kind(kind)
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
        let a = a.to_kind(Kind::Double);
        let b = b.to_kind(Kind::Double);
        let scale = b.abs().max().double_value(&[]).max(1e-12);
        (a - b).abs().max().double_value(&[]) / scale
    }

    /// (output, dx, dW) of the batched function (`mine`) or libtorch's conv2d, for the upstream
    /// gradient `g`.
    fn run(mine: bool, x: &Tensor, w: &Tensor, g: &Tensor, geometry: (i64, i64)) -> [Tensor; 3] {
        let x = x.detach().set_requires_grad(true);
        let w = w.detach().set_requires_grad(true);
        let (s, p) = geometry;
        let y = if mine {
            batched(&x, &w, geometry)
                .unwrap()
                .expect("the shim takes it")
        } else {
            x.conv2d(&w, None::<Tensor>, [s, s], [p, p], [1, 1], 1)
        };
        (y.to_kind(Kind::Float) * g).sum(Kind::Float).backward();
        [y.detach(), x.grad(), w.grad()]
    }

    /// Shapes `(n, c_in, c_out, h, w, k, stride, pad)`: odd sizes, strides 1 and 2, 1×1 and
    /// 3×3 kernels, one with no padding.
    type Shape = (i64, i64, i64, i64, i64, i64, i64, i64);
    const SHAPES: [Shape; 5] = [
        (3, 5, 7, 4, 3, 3, 1, 1),
        (2, 8, 6, 7, 5, 3, 2, 1),
        (4, 6, 16, 5, 6, 1, 2, 0),
        (2, 4, 3, 6, 5, 3, 1, 0),
        (5, 16, 8, 2, 2, 3, 1, 1),
    ];

    fn compare(kind: Kind, tolerance: f64) {
        let mut init = Init::new(11);
        for (n, ci, co, h, w, k, s, p) in SHAPES {
            let x = channels_last(normal(&mut init, &[n, ci, h, w], kind));
            let wt = channels_last(normal(&mut init, &[co, ci, k, k], kind));
            let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
            let g = normal(&mut init, &[n, co, oh, ow], Kind::Float);
            let mine = run(true, &x, &wt, &g, (s, p));
            let theirs = run(false, &x, &wt, &g, (s, p));
            for (name, a, b) in [
                ("output", &mine[0], &theirs[0]),
                ("dx", &mine[1], &theirs[1]),
                ("dW", &mine[2], &theirs[2]),
            ] {
                assert_eq!(
                    a.size(),
                    b.size(),
                    "{name} of {:?}",
                    (n, ci, co, h, w, k, s)
                );
                assert_eq!(a.kind(), b.kind(), "{name}");
                let e = max_rel(a, b);
                assert!(
                    e < tolerance,
                    "{name} of {:?}: max relative error {e}",
                    (n, ci, co, h, w, k, s, p)
                );
            }
        }
    }

    #[test]
    fn fp32_gradients_match_libtorch() {
        compare(Kind::Float, 1e-5);
    }

    #[test]
    fn bf16_gradients_match_libtorch_within_its_rounding() {
        // bf16 keeps 8 bits; both sum in fp32 and round once
        compare(Kind::BFloat16, 1e-2);
    }

    /// A layer4-like convolution of the model: the weight is an fp32 variable.
    fn conv(vs: &nn::VarStore, c: i64, stride: i64) -> Conv2d {
        let mut init = Init::new(5);
        Conv2d::new(&vs.root(), &mut init, (c, c, 3), stride, 1).unwrap()
    }

    #[test]
    fn under_bf16_autocast_the_weight_gets_its_fp32_gradient() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let c = conv(&vs, 8, 1);
        let mut init = Init::new(3);
        let x = channels_last(normal(&mut init, &[6, 8, 4, 4], Kind::BFloat16));
        let g = normal(&mut init, &[6, 8, 4, 4], Kind::Float);
        let mut grads = vec![];
        for mine in [true, false] {
            let _ = c.weight.grad().f_zero_();
            let xg = x.detach().set_requires_grad(true);
            let y = {
                let _autocast = Autocast::enter(tch::Device::Cpu, Precision::Bf16).unwrap();
                match mine {
                    true => conv_train(&c, &xg).unwrap().expect("16 positions in bf16"),
                    false => c.forward(&xg).unwrap(),
                }
            };
            assert_eq!(y.kind(), Kind::BFloat16);
            (y.to_kind(Kind::Float) * &g).sum(Kind::Float).backward();
            grads.push((y.detach(), xg.grad(), c.weight.grad().copy()));
        }
        let (mine, theirs) = (&grads[0], &grads[1]);
        assert_eq!(
            mine.2.kind(),
            Kind::Float,
            "the variable's gradient is fp32"
        );
        assert_eq!(
            max_rel(&mine.0, &theirs.0),
            0.0,
            "the forward is libtorch's"
        );
        assert!(max_rel(&mine.1, &theirs.1) < 1e-2, "dx");
        let e = max_rel(&mine.2, &theirs.2);
        assert!(e < 1e-2, "dW: max relative error {e}");
    }

    #[test]
    fn applies_only_to_few_output_positions_of_a_trained_cpu_channels_last_batch() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let c = conv(&vs, 4, 1);
        let x =
            |dims: &[i64], kind: Kind| channels_last(Tensor::ones(dims, (kind, tch::Device::Cpu)));
        // fp32: 2x2 = 4 positions yes, 3x2 = 6 no
        assert!(conv_train(&c, &x(&[2, 4, 2, 2], Kind::Float))
            .unwrap()
            .is_some());
        assert!(conv_train(&c, &x(&[2, 4, 3, 2], Kind::Float))
            .unwrap()
            .is_none());
        // NCHW, f64
        let nchw = Tensor::ones([2, 4, 2, 2], (Kind::Float, tch::Device::Cpu));
        assert!(conv_train(&c, &nchw).unwrap().is_none());
        assert!(conv_train(&c, &x(&[2, 4, 2, 2], Kind::Double))
            .unwrap()
            .is_none());
        // bf16 input with the fp32 weight only under autocast; 8x8 = 64 positions yes, 9x8 no
        let bf = x(&[2, 4, 8, 8], Kind::BFloat16);
        assert!(conv_train(&c, &bf).unwrap().is_none());
        {
            let _autocast = Autocast::enter(tch::Device::Cpu, Precision::Bf16).unwrap();
            assert!(conv_train(&c, &bf).unwrap().is_some());
            let big = x(&[2, 4, 9, 8], Kind::BFloat16);
            assert!(conv_train(&c, &big).unwrap().is_none());
        }
        // a frozen weight: nothing to gain
        let frozen = nn::VarStore::new(tch::Device::Cpu);
        let f = conv(&frozen, 4, 1);
        let _ = f.weight.shallow_clone().set_requires_grad(false);
        assert!(conv_train(&f, &x(&[2, 4, 2, 2], Kind::Float))
            .unwrap()
            .is_none());
        // the stride counts: 4x4 at stride 2 is 2x2 = 4 positions
        let s2 = conv(&vs, 4, 2);
        assert!(conv_train(&s2, &x(&[2, 4, 4, 4], Kind::Float))
            .unwrap()
            .is_some());
    }
}
