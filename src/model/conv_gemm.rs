//! Convolutions as matrix products over the batch, for the convolutions whose outputs have few
//! positions.
//!
//! oneDNN's CPU convolution kernels work image by image: where a layer's output has few positions
//! (ResNet-18's layer4 is 2×2 when training on 64² crops, 8×8 at 256²), each image's products
//! are tiny and the weight gradient takes 3–4× its forward's time. The functions of
//! `csrc/conv_gemm.cpp` unfold the input into patches once for the whole batch and do the work as
//! one GEMM each (AMX in bf16): where an output has at most [`GEMM_POSITIONS`] positions, the
//! whole convolution (forward, input gradient, weight gradient); where a bf16 output has at most
//! [`WGRAD_POSITIONS_BF16`], the weight gradient only (`dyᵀ · patches(x)`; the forward and input
//! gradient stay oneDNN's). Measured on one layer, 96 views, 2 threads of an AMX CPU
//! (`benches/reference/conv_layers.py`, docs/results.md "Convolutions as batched products"):
//!
//! | layer (bf16) | oneDNN fwd / dx / dW | products fwd / dx / dW |
//! |---|---|---|
//! | 512→512 3×3 at 2×2 (layer4 at 64²) | 17.7 / 17.6 / 52.9 ms | 5.2 / 5.6 / 4.1 ms |
//! | 256→256 3×3 at 4×4 (layer3 at 64²) | 4.9 / 5.3 / 16.8 ms | 4.2 / 5.2 / 4.9 ms |
//! | 512→512 3×3 at 8×8 (layer4 at 256²) | 19.6 / 21.5 / 123.5 ms | 40.0 / 67.2 / 79.9 ms |
//! | 64→64 3×3 at 16×16 (layer1 at 64²) | 2.0 / 2.2 / 2.7 ms | 7.5 / 13.3 / 14.8 ms |
//!
//! In fp32 (the fast path of CPUs without AMX) the products gain at 2×2 (512→512: 24.1 / 29.6 /
//! 50.4 ms against 14.5 / 14.5 / 14.5) and not at 4×4, so only the whole-convolution rule applies.
//! Used for channels-last batches on the CPU in training mode. Same functions in another
//! summation order; the input gradient is summed over the kernel taps in fp32 from bf16
//! products (within bf16's rounding, see the tests). [`set_conv_gemm`] or `CUTPASTE_CONV_GEMM=0`
//! turns them off.
use super::fused_train::shim_result;
use super::layers::Conv2d;
use super::switch::Switch;
use crate::error::Result;
use std::os::raw::{c_char, c_int};
use tch::{Kind, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn cutpaste_conv_gemm_last_error() -> *const c_char;
    fn cutpaste_conv_gemm_train(
        x: *const C_tensor,
        w: *const C_tensor,
        stride: i64,
        pad: i64,
        whole: c_int,
        out: *mut *mut C_tensor,
    ) -> c_int;
}

/// Output positions (Ho·Wo) up to which a training convolution runs as products entirely.
pub const GEMM_POSITIONS: i64 = 4;
/// Output positions up to which a bf16 training convolution's weight gradient is one product.
pub const WGRAD_POSITIONS_BF16: i64 = 64;

static ENABLED: Switch = Switch::new("CUTPASTE_CONV_GEMM");

/// Turns the batched convolution products on or off for this process (on by default unless the
/// environment variable `CUTPASTE_CONV_GEMM` is `0`). Off, every convolution is oneDNN's; the
/// trained models are the same up to rounding.
pub fn set_conv_gemm(on: bool) {
    ENABLED.set(on);
}

/// Whether the batched convolution products are on (see [`set_conv_gemm`]).
pub fn conv_gemm() -> bool {
    ENABLED.on()
}

/// Which function a convolution of `x` with a `k`×`k` kernel runs: `Some(true)` all products,
/// `Some(false)` the weight gradient's, `None` oneDNN's.
fn which(x: &Tensor, k: i64, (stride, pad): (i64, i64)) -> Option<bool> {
    let size = x.size();
    if size.len() != 4 || stride < 1 {
        return None;
    }
    let out = |n: i64| (n + 2 * pad - k) / stride + 1;
    let positions = out(size[2]) * out(size[3]);
    match x.kind() {
        _ if positions < 1 => None,
        Kind::BFloat16 | Kind::Float if positions <= GEMM_POSITIONS => Some(true),
        Kind::BFloat16 if positions <= WGRAD_POSITIONS_BF16 => Some(false),
        _ => None,
    }
}

/// `conv.forward(x)` in training mode as batched products, or `None` when they do not apply
/// (off, not the CPU, too many output positions, weights not trained, an input the functions do
/// not take); then nothing was done and the caller runs libtorch's convolution.
pub(crate) fn conv_train(conv: &Conv2d, x: &Tensor) -> Result<Option<Tensor>> {
    let w = &conv.weight;
    let geometry = conv.geometry();
    if !conv_gemm() || x.device() != tch::Device::Cpu || !w.requires_grad() {
        return Ok(None);
    }
    let Some(whole) = which(x, w.size().last().copied().unwrap_or(0), geometry) else {
        return Ok(None);
    };
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
    batched(x, w, geometry, whole)
}

/// The shim's convolution (any size, no policy): all products when `whole`, else the weight
/// gradient's; `None` when the shim does not take the input.
fn batched(x: &Tensor, w: &Tensor, (s, p): (i64, i64), whole: bool) -> Result<Option<Tensor>> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: both pointers are live tch tensors; the shim writes `out` only on success.
    let code = unsafe {
        cutpaste_conv_gemm_train(x.as_ptr(), w.as_ptr(), s, p, c_int::from(whole), &mut out)
    };
    shim_result(
        code,
        out,
        cutpaste_conv_gemm_last_error,
        "batched convolution",
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

    /// (output, dx, dW) of a batched function (`Some(whole)`) or libtorch's conv2d (`None`), for
    /// the upstream gradient `g`.
    fn run(
        f: Option<bool>,
        x: &Tensor,
        w: &Tensor,
        g: &Tensor,
        geometry: (i64, i64),
    ) -> [Tensor; 3] {
        let x = x.detach().set_requires_grad(true);
        let w = w.detach().set_requires_grad(true);
        let (s, p) = geometry;
        let y = match f {
            Some(whole) => batched(&x, &w, geometry, whole)
                .unwrap()
                .expect("the shim takes it"),
            None => x.conv2d(&w, None::<Tensor>, [s, s], [p, p], [1, 1], 1),
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

    fn compare(whole: bool, kind: Kind, tolerance: f64) {
        let mut init = Init::new(11);
        for (n, ci, co, h, w, k, s, p) in SHAPES {
            let x = channels_last(normal(&mut init, &[n, ci, h, w], kind));
            let wt = channels_last(normal(&mut init, &[co, ci, k, k], kind));
            let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
            let g = normal(&mut init, &[n, co, oh, ow], Kind::Float);
            let mine = run(Some(whole), &x, &wt, &g, (s, p));
            let theirs = run(None, &x, &wt, &g, (s, p));
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
                    "{name} of {:?} (whole {whole}): max relative error {e}",
                    (n, ci, co, h, w, k, s, p)
                );
                if name == "output" && !whole {
                    assert_eq!(
                        e, 0.0,
                        "the weight-gradient function's forward is libtorch's"
                    );
                }
            }
        }
    }

    #[test]
    fn fp32_matches_libtorch() {
        for whole in [false, true] {
            compare(whole, Kind::Float, 1e-5);
        }
    }

    #[test]
    fn bf16_matches_libtorch_within_its_rounding() {
        // bf16 keeps 8 bits; the products sum in fp32 and round once (dx: the taps' products
        // are rounded to bf16 before their fp32 sum)
        for whole in [false, true] {
            compare(whole, Kind::BFloat16, 1.5e-2);
        }
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
        // 4x4: the weight gradient's function; 2x2: all products
        for hw in [4, 2] {
            let x = channels_last(normal(&mut init, &[6, 8, hw, hw], Kind::BFloat16));
            let g = normal(&mut init, &[6, 8, hw, hw], Kind::Float);
            let mut grads = vec![];
            for mine in [true, false] {
                let _ = c.weight.grad().f_zero_();
                let xg = x.detach().set_requires_grad(true);
                let y = {
                    let _autocast = Autocast::enter(tch::Device::Cpu, Precision::Bf16).unwrap();
                    match mine {
                        true => conv_train(&c, &xg).unwrap().expect("few positions in bf16"),
                        false => c.forward(&xg).unwrap(),
                    }
                };
                assert_eq!(y.kind(), Kind::BFloat16);
                (y.to_kind(Kind::Float) * &g).sum(Kind::Float).backward();
                grads.push([y.detach(), xg.grad(), c.weight.grad().copy()]);
            }
            let (mine, theirs) = (&grads[0], &grads[1]);
            assert_eq!(
                mine[2].kind(),
                Kind::Float,
                "the variable's gradient is fp32"
            );
            let ey = max_rel(&mine[0], &theirs[0]);
            assert!(ey < 1e-2, "{hw}x{hw} output: {ey}");
            if hw == 4 {
                assert_eq!(
                    ey, 0.0,
                    "the weight-gradient function's forward is libtorch's"
                );
            }
            for (name, i) in [("dx", 1), ("dW", 2)] {
                let e = max_rel(&mine[i], &theirs[i]);
                assert!(e < 1.5e-2, "{hw}x{hw} {name}: max relative error {e}");
            }
        }
    }

    #[test]
    fn applies_only_to_few_output_positions_of_a_trained_cpu_channels_last_batch() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let c = conv(&vs, 4, 1);
        let x =
            |dims: &[i64], kind: Kind| channels_last(Tensor::ones(dims, (kind, tch::Device::Cpu)));
        assert_eq!(which(&x(&[2, 4, 2, 2], Kind::Float), 3, (1, 1)), Some(true));
        assert_eq!(
            which(&x(&[2, 4, 2, 2], Kind::BFloat16), 3, (1, 1)),
            Some(true)
        );
        assert_eq!(
            which(&x(&[2, 4, 8, 8], Kind::BFloat16), 3, (1, 1)),
            Some(false)
        );
        assert_eq!(which(&x(&[2, 4, 8, 8], Kind::Float), 3, (1, 1)), None);
        assert_eq!(
            which(&x(&[2, 4, 16, 16], Kind::BFloat16), 3, (2, 1)),
            Some(false)
        );
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
