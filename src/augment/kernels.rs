//! Colour kernels for the jitter, written for speed: the image is processed in tiles of up to
//! `TILE` pixels, de-interleaved into `f32` planes, and every operation is a branch-free loop
//! over those planes (selects only), so the compiler vectorises it (SSE2 on baseline x86-64,
//! AVX2 where the CPU has it, chosen at run time).
//!
//! Every operation rounds its result to whole 8-bit values (to nearest, ties to even, clamped to
//! `[0, 255]`), so a chain of steps gives exactly what applying them one at a time to 8-bit
//! images gives. Contrast needs the mean grey level of its input, i.e. of the whole image after
//! the steps before it: the tiles of the steps before it stay in scratch planes until that mean
//! is known, so every chain reads and writes the bytes once.
use std::cell::Cell;

/// 2^23: adding it to a float in `[0, 2^23)` leaves the nearest whole number (ties to even) in
/// the mantissa, which rounds without a float → int conversion (those do not vectorise on SSE2).
const MAGIC: f32 = 8_388_608.0;

/// Rounds to the nearest whole number (ties to even, like `torch.round`) after clamping to
/// `[0, 255]`; NaN → 0.
#[inline(always)]
#[allow(clippy::manual_clamp)] // `max`/`min` map NaN to a bound; `clamp` would keep it
fn q(v: f32) -> f32 {
    (v.max(0.0).min(255.0) + MAGIC) - MAGIC
}

/// One pointwise colour operation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Step {
    /// `x ← round(clamp(scale·x + offset))` on every channel (brightness; contrast once its
    /// mean is known).
    Affine { scale: f32, offset: f32 },
    /// Contrast: `x ← round(clamp(f·x + (1 − f)·mean grey of the image))`.
    Contrast(f32),
    /// `x ← round(clamp(f·x + (1 − f)·grey))` with each pixel's own grey level.
    Saturation(f32),
    /// HSV hue rotation by this many sextants (`0 ≤ shift < 6`).
    Hue(f32),
}

/// Pixels per tile: three planes of 8 KiB stay in L1 (measured faster than larger tiles even
/// though those would run more patches in a single pass). Every scar fits in one tile.
const TILE: usize = 2048;

/// The red, green and blue planes of a tile.
type Planes<'a> = (&'a mut [f32], &'a mut [f32], &'a mut [f32]);

/// Images up to this many pixels keep their planes between the stages of a chain (12 MiB of
/// scratch per thread at most); larger ones go back to bytes between stages.
const BUFFER_MAX_PIXELS: usize = 1 << 20;

thread_local! {
    /// Reused plane storage, so that jittering allocates nothing after the first call.
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

fn is_contrast(s: &Step) -> bool {
    matches!(s, Step::Contrast(_))
}

/// Applies `steps` in order to interleaved RGB bytes.
pub(crate) fn run(raw: &mut [u8], steps: &[Step]) {
    let later = steps.iter().skip(1).position(is_contrast);
    match later {
        Some(c) if raw.len() / 3 > BUFFER_MAX_PIXELS => {
            pass(raw, &steps[..=c]);
            run(raw, &steps[c + 1..]);
        }
        _ => pass(raw, steps),
    }
}

/// Mean ITU-R 601-2 grey level `0.299 R + 0.587 G + 0.114 B` of interleaved RGB bytes (exact
/// integer channel sums; 0 when empty).
pub(crate) fn mean_grey(raw: &[u8]) -> f32 {
    let n = raw.len() / 3;
    if n == 0 {
        return 0.0;
    }
    // 48 byte lanes (16 pixels) so the loop vectorises; lane j holds channel j mod 3. Runs of
    // 2^16 blocks keep each u32 lane below 255·2^16 < 2^32.
    let mut sums = [0u64; 3];
    for run in raw.chunks(48 << 16) {
        let mut lanes = [0u32; 48];
        let mut blocks = run.chunks_exact(48);
        for block in &mut blocks {
            for (l, v) in lanes.iter_mut().zip(block) {
                *l += u32::from(*v);
            }
        }
        for (j, l) in lanes.iter().enumerate() {
            sums[j % 3] += u64::from(*l);
        }
        // Runs start at multiples of 48 bytes, so remainder byte j is channel j mod 3.
        for (j, v) in blocks.remainder().iter().enumerate() {
            sums[j % 3] += u64::from(*v);
        }
    }
    let grey = 0.299 * sums[0] as f64 + 0.587 * sums[1] as f64 + 0.114 * sums[2] as f64;
    (grey / n as f64) as f32
}

/// One pass over the image. Uses an AVX2 build of the same code where the CPU has it: the
/// operations are the same IEEE operations in the same order (Rust never contracts to FMA), so
/// results are bit-identical on every CPU.
fn pass(raw: &mut [u8], steps: &[Step]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { pass_avx2(raw, steps) };
        return;
    }
    pass_generic(raw, steps);
}

/// [`pass_generic`] compiled for AVX2.
///
/// # Safety
/// Only call on CPUs with AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pass_avx2(raw: &mut [u8], steps: &[Step]) {
    pass_generic(raw, steps);
}

/// Runs `steps` tile by tile, in stages split before every contrast but a leading one. A
/// contrast needs the mean grey level of the whole image as it is at that point: a leading one
/// takes it from the bytes, a later one from the exact sums of the previous stage, whose tiles
/// stay in the scratch planes meanwhile.
#[inline(always)]
fn pass_generic(raw: &mut [u8], steps: &[Step]) {
    let n = raw.len() / 3;
    if n == 0 || steps.is_empty() {
        return;
    }
    let mut cuts: Vec<usize> = (1..steps.len())
        .filter(|&i| is_contrast(&steps[i]))
        .collect();
    cuts.insert(0, 0);
    cuts.push(steps.len());
    let stages = cuts.len() - 1;
    let slot = 3 * TILE;
    let need = if stages > 1 {
        n.div_ceil(TILE) * slot
    } else {
        slot
    };
    let mut buf = SCRATCH.take();
    if buf.len() < need {
        buf.resize(need, 0.0);
    }
    let mut mean = if is_contrast(&steps[0]) {
        mean_grey(raw)
    } else {
        0.0
    };
    for (stage, bounds) in cuts.windows(2).enumerate() {
        let (first, last) = (stage == 0, stage + 1 == stages);
        let mut sums = [0.0f64; 3];
        for (t, chunk) in raw.chunks_mut(3 * TILE).enumerate() {
            let np = chunk.len() / 3;
            let start = if stages > 1 { t * slot } else { 0 };
            let (r, gb) = buf[start..start + slot].split_at_mut(TILE);
            let (g, b) = gb.split_at_mut(TILE);
            if first {
                for (((px, r), g), b) in chunk
                    .chunks_exact(3)
                    .zip(r.iter_mut())
                    .zip(g.iter_mut())
                    .zip(b.iter_mut())
                {
                    *r = f32::from(px[0]);
                    *g = f32::from(px[1]);
                    *b = f32::from(px[2]);
                }
            }
            // Planes padded to a multiple of 8 so the loops have no scalar tail; the padding
            // holds stale finite values that are never read back.
            let len = np.next_multiple_of(8);
            let (r, g, b) = (&mut r[..len], &mut g[..len], &mut b[..len]);
            for step in &steps[bounds[0]..bounds[1]] {
                match *step {
                    Step::Affine { scale, offset } => affine((r, g, b), scale, offset),
                    Step::Contrast(f) => affine((r, g, b), f, (1.0 - f) * mean),
                    Step::Saturation(f) => saturation((r, g, b), f),
                    Step::Hue(s) => hue((r, g, b), s),
                }
            }
            if last {
                for (((px, r), g), b) in chunk
                    .chunks_exact_mut(3)
                    .zip(r.iter())
                    .zip(g.iter())
                    .zip(b.iter())
                {
                    // Whole numbers in [0, 255]: the low mantissa byte of `v + 2^23` is `v`.
                    px[0] = (*r + MAGIC).to_bits() as u8;
                    px[1] = (*g + MAGIC).to_bits() as u8;
                    px[2] = (*b + MAGIC).to_bits() as u8;
                }
            } else {
                for (s, plane) in sums.iter_mut().zip([&*r, &*g, &*b]) {
                    *s += exact_sum(&plane[..np]);
                }
            }
        }
        mean = ((0.299 * sums[0] + 0.587 * sums[1] + 0.114 * sums[2]) / n as f64) as f32;
    }
    SCRATCH.set(buf);
}

/// Exact sum of at most `TILE` whole numbers in `[0, 255]`: eight `f32` lanes (exact below
/// 2^24 > 255·2048), so the loop vectorises.
#[inline(always)]
fn exact_sum(plane: &[f32]) -> f64 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = plane.chunks_exact(8);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += *v;
        }
    }
    let tail: f32 = chunks.remainder().iter().sum();
    f64::from(lanes.iter().sum::<f32>() + tail)
}

#[inline(always)]
fn affine((r, g, b): Planes<'_>, scale: f32, offset: f32) {
    // Plane by plane: a flattened iterator does not vectorise.
    for plane in [r, g, b] {
        for v in plane.iter_mut() {
            *v = q(scale * *v + offset);
        }
    }
}

#[inline(always)]
fn saturation((r, g, b): Planes<'_>, factor: f32) {
    let keep = 1.0 - factor;
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let grey = keep * (0.299 * *r + 0.587 * *g + 0.114 * *b);
        *r = q(factor * *r + grey);
        *g = q(factor * *g + grey);
        *b = q(factor * *b + grey);
    }
}

/// torchvision's `_rgb2hsv` → `h = (h + shift) mod 1` → `_hsv2rgb`, in sextants. Grey pixels
/// (chroma 0) stay unchanged since every channel comes out as `max`.
#[inline(always)]
fn hue((r, g, b): Planes<'_>, shift6: f32) {
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let (ri, gi, bi) = (*r, *g, *b);
        let max = ri.max(gi).max(bi);
        let min = ri.min(gi).min(bi);
        let chroma = max - min;
        let div = if chroma > 0.0 { chroma } else { 1.0 };
        // Hue in sextants: [-1, 5) before the shift, [-1, 11) after, then wrapped to [0, 6].
        // Numerator and base are selected first so that there is one division, not three.
        let (base, num) = if max == ri {
            (0.0, gi - bi)
        } else if max == gi {
            (2.0, bi - ri)
        } else {
            (4.0, ri - gi)
        };
        let h = base + num / div + shift6;
        let h = if h < 0.0 { h + 6.0 } else { h };
        let h = if h >= 6.0 { h - 6.0 } else { h };
        // Channel n (5, 3, 1 for R, G, B) is `max − chroma·clamp(min(k, 4 − k), 0, 1)`,
        // k = (n + h) mod 6.
        let channel = |n: f32| {
            let k = n + h;
            let k = if k >= 6.0 { k - 6.0 } else { k };
            // In [min, max] ⊂ [0, 255] already: round without clamping.
            (max - chroma * k.min(4.0 - k).clamp(0.0, 1.0) + MAGIC) - MAGIC
        };
        *r = channel(5.0);
        *g = channel(3.0);
        *b = channel(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u32) -> Vec<u8> {
        let mut s = seed | 1;
        (0..3 * n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 24) as u8
            })
            .collect()
    }

    /// Each step on its own, through bytes.
    fn one_by_one(raw: &mut [u8], steps: &[Step]) {
        for s in steps {
            pass_generic(raw, std::slice::from_ref(s));
        }
    }

    const CHAIN: [Step; 4] = [
        Step::Hue(0.4),
        Step::Saturation(1.08),
        Step::Contrast(0.93),
        Step::Affine {
            scale: 1.05,
            offset: 0.0,
        },
    ];

    #[test]
    fn fused_chain_equals_steps_one_by_one_across_tiles() {
        // 3·TILE/2 + 5 pixels: two tiles, a partial one, a tail that is not a multiple of 8.
        let n = 3 * TILE / 2 + 5;
        let mut fused = noise(n, 7);
        let mut single = fused.clone();
        run(&mut fused, &CHAIN);
        one_by_one(&mut single, &CHAIN);
        assert_eq!(fused, single);
    }

    #[test]
    fn dispatched_pass_equals_the_generic_build() {
        let mut a = noise(TILE + 3, 9);
        let mut b = a.clone();
        pass(&mut a, &CHAIN); // AVX2 where available
        pass_generic(&mut b, &CHAIN);
        assert_eq!(a, b);
    }

    #[test]
    fn images_beyond_the_scratch_limit_take_the_byte_path() {
        let n = BUFFER_MAX_PIXELS + 17;
        let mut fused = noise(n, 3);
        let mut single = fused.clone();
        run(&mut fused, &CHAIN);
        one_by_one(&mut single, &CHAIN);
        assert!(fused == single);
    }
}
