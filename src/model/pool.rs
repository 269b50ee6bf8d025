//! ResNet-18's stem max pool (3×3, stride 2, padding 1) for the fused inference backbone, on
//! channels-last activations after the stem's ReLU.
//!
//! libtorch's CPU `max_pool2d` also computes and stores the argmax indices (int64, four times
//! the size of a bf16 output), which inference does not need. This one reads the NHWC buffer once:
//! every output pixel is the channel-wise maximum of its (up to) 3×3 input pixels, each a
//! contiguous row of `C` values. The input is non-negative (it follows a ReLU), and non-negative
//! IEEE floats order like their bit patterns as signed integers, so the maximum is taken on
//! `i16` (bf16) or `i32` (fp32) lanes, which vectorise on every x86-64 CPU, after clearing the
//! sign bit: a ReLU can return −0.0, which then counts as 0.0 (the same value), and libtorch
//! writes bf16 NaNs with the sign bit set, which then count as larger than every finite value,
//! so NaNs propagate, as in libtorch.
use crate::error::Result;
use tch::{Device, Kind, Tensor};

/// `max_pool2d(x, 3, stride 2, padding 1)` of a non-negative `[N, C, H, W]` tensor. Runs the
/// kernel below for a channels-last, CPU, bf16 or fp32 `x`, libtorch's otherwise; the values
/// are the same.
pub(crate) fn stem_max_pool(x: &Tensor) -> Result<Tensor> {
    let size = x.size();
    let fits = x.device() == Device::Cpu
        && size.len() == 4
        && size.iter().all(|&d| d > 0)
        && matches!(x.kind(), Kind::BFloat16 | Kind::Float)
        && is_nhwc_contiguous(&size, &x.stride());
    if !fits {
        return Ok(x.f_max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)?);
    }
    let [n, c, h, w] = [size[0], size[1], size[2], size[3]];
    let (ho, wo) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
    // [N, Ho, Wo, C] contiguous, viewed as [N, C, Ho, Wo] with channels-last strides
    let out = Tensor::f_empty([n, ho, wo, c], (x.kind(), Device::Cpu))?;
    let geometry = Geometry {
        rows: (n * ho) as usize,
        h: h as usize,
        w: w as usize,
        ho: ho as usize,
        wo: wo as usize,
        c: c as usize,
    };
    let threads = tch::get_num_threads().max(1) as usize;
    // SAFETY: `x` is a contiguous NHWC buffer of n·h·w·c elements of its kind and `out` a new
    // contiguous one of n·ho·wo·c; both live until the end of this function, and the threads of
    // `pool` write disjoint output rows.
    unsafe {
        match x.kind() {
            Kind::BFloat16 => pool::<i16>(x.data_ptr(), out.data_ptr(), geometry, threads),
            _ => pool::<i32>(x.data_ptr(), out.data_ptr(), geometry, threads),
        }
    }
    Ok(out.f_permute([0, 3, 1, 2])?)
}

/// True when `stride` is that of a contiguous NHWC buffer holding a `[N, C, H, W]` tensor.
fn is_nhwc_contiguous(size: &[i64], stride: &[i64]) -> bool {
    let [_, c, h, w] = [size[0], size[1], size[2], size[3]];
    stride == [h * w * c, 1, w * c, c]
}

/// The bit pattern of a bf16 (`i16`) or fp32 (`i32`) value, ordered as the value when the sign
/// bit is cleared.
trait Lane: Copy + Ord + Send + Sync {
    /// The pattern with the sign bit cleared (|x|; a NaN stays a NaN).
    fn magnitude(self) -> Self;
}

impl Lane for i16 {
    fn magnitude(self) -> Self {
        self & i16::MAX
    }
}

impl Lane for i32 {
    fn magnitude(self) -> Self {
        self & i32::MAX
    }
}

#[derive(Clone, Copy)]
struct Geometry {
    /// Output rows, N·Ho.
    rows: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    c: usize,
}

/// Pools `input` (N·H·W·C values of `T`) into `output` (N·Ho·Wo·C), its rows split over
/// `threads` scoped threads.
///
/// # Safety
/// `input` and `output` must point to buffers of those lengths that live for the call.
unsafe fn pool<T: Lane>(
    input: *mut std::ffi::c_void,
    output: *mut std::ffi::c_void,
    g: Geometry,
    threads: usize,
) {
    let n = g.rows / g.ho;
    // SAFETY: the caller's contract.
    let (input, output) = unsafe {
        (
            std::slice::from_raw_parts(input as *const T, n * g.h * g.w * g.c),
            std::slice::from_raw_parts_mut(output as *mut T, g.rows * g.wo * g.c),
        )
    };
    let row_len = g.wo * g.c;
    let per_thread = g.rows.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (chunk_index, chunk) in output.chunks_mut(per_thread * row_len).enumerate() {
            s.spawn(move || {
                for (i, out_row) in chunk.chunks_mut(row_len).enumerate() {
                    pool_row(input, out_row, chunk_index * per_thread + i, g);
                }
            });
        }
    });
}

/// One output row `r` (image `r / Ho`, output line `r % Ho`): for every output pixel, the
/// channel-wise maximum of the input pixels of its 3×3 window that lie inside the image.
fn pool_row<T: Lane>(input: &[T], out_row: &mut [T], r: usize, g: Geometry) {
    let (image, oy) = (r / g.ho, r % g.ho);
    let ys = (2 * oy).saturating_sub(1)..(2 * oy + 2).min(g.h);
    for ox in 0..g.wo {
        let out = &mut out_row[ox * g.c..(ox + 1) * g.c];
        let xs = (2 * ox).saturating_sub(1)..(2 * ox + 2).min(g.w);
        let mut first = true;
        for y in ys.clone() {
            for x in xs.clone() {
                let at = ((image * g.h + y) * g.w + x) * g.c;
                let px = &input[at..at + g.c];
                if first {
                    for (o, &v) in out.iter_mut().zip(px) {
                        *o = v.magnitude();
                    }
                    first = false;
                } else {
                    for (o, &v) in out.iter_mut().zip(px) {
                        *o = (*o).max(v.magnitude());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::layers::channels_last;

    /// Against libtorch's `max_pool2d` on non-negative inputs with ties, zeros and a NaN, odd
    /// and even sides, both kinds, channels-last (the kernel) and NCHW (libtorch's fallback).
    #[test]
    fn equals_libtorch_max_pool() {
        tch::manual_seed(1);
        for (h, w) in [(7, 9), (8, 8), (1, 2), (2, 1), (33, 16)] {
            for kind in [Kind::Float, Kind::BFloat16] {
                // values k/4 for k in 0..8, many ties and exact zeros, as after a ReLU
                let x = Tensor::randint(8, [2, 5, h, w], (Kind::Float, Device::Cpu)) / 4.0;
                // −0.0 where the value is 0 in image 0 (a ReLU's output for negative inputs),
                // and one NaN
                let image0 = Tensor::from_slice(&[1f32, 0.0]).view([2, 1, 1, 1]);
                let sign: Tensor = 1.0 - x.eq(0.0).to_kind(Kind::Float) * image0 * 2.0;
                let x: Tensor = &x * &sign;
                if h * w >= 16 {
                    assert!(
                        x.signbit().any().int64_value(&[]) == 1,
                        "no −0.0 in the input"
                    );
                }
                let _ = x.get(1).get(2).get(0).get(0).fill_(f64::NAN);
                let x = x.to_kind(kind);
                let want = x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
                for input in [channels_last(&x).unwrap(), x.shallow_clone()] {
                    let got = stem_max_pool(&input).unwrap();
                    assert_eq!(got.size(), want.size(), "{h}x{w} {kind:?}");
                    let same = got.isnan().eq_tensor(&want.isnan()).all().int64_value(&[]) == 1
                        && got
                            .nan_to_num(Some(-1.0), None, None)
                            .equal(&want.nan_to_num(Some(-1.0), None, None));
                    assert!(same, "{h}x{w} {kind:?}\n{got}\n{want}");
                }
            }
        }
    }
}
