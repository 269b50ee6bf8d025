//! Procedural defect-free images: a woven texture and an aligned object (a turned part on a
//! background). Each is a pure function of `(side, seed)`.
use image::{Rgb, RgbImage};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Smooth value noise in `[0, 1]`: random values on a `cells`×`cells` grid, bilinearly
/// interpolated to `side`×`side`.
pub(crate) fn value_noise(rng: &mut ChaCha8Rng, side: u32, cells: u32) -> Vec<f32> {
    let g = cells as usize + 2;
    let grid: Vec<f32> = (0..g * g).map(|_| rng.random::<f32>()).collect();
    let s = side as usize;
    let step = cells as f32 / side as f32;
    let mut out = vec![0f32; s * s];
    for y in 0..s {
        let fy = y as f32 * step;
        let (iy, ty) = (fy as usize, fy.fract());
        for x in 0..s {
            let fx = x as f32 * step;
            let (ix, tx) = (fx as usize, fx.fract());
            let a = grid[iy * g + ix] * (1.0 - tx) + grid[iy * g + ix + 1] * tx;
            let b = grid[(iy + 1) * g + ix] * (1.0 - tx) + grid[(iy + 1) * g + ix + 1] * tx;
            out[y * s + x] = a * (1.0 - ty) + b * ty;
        }
    }
    out
}

pub(crate) fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// A woven fabric-like texture: two interleaved thread directions with a per-image random
/// phase, a slight colour shift and fine noise.
pub(crate) fn weave(side: u32, rng: &mut ChaCha8Rng) -> RgbImage {
    let period = (side as f32 / 16.0).max(4.0);
    let (px, py) = (rng.random::<f32>() * period, rng.random::<f32>() * period);
    let base = [
        150.0 + rng.random_range(-8.0..8.0),
        120.0 + rng.random_range(-8.0..8.0),
        90.0 + rng.random_range(-8.0..8.0),
    ];
    let coarse = value_noise(rng, side, 6);
    let fine = value_noise(rng, side, side / 2);
    let w = std::f32::consts::TAU / period;
    RgbImage::from_fn(side, side, |x, y| {
        let i = (y * side + x) as usize;
        let u = ((x as f32 + px) * w).sin();
        let v = ((y as f32 + py) * w).sin();
        // over/under: horizontal thread on top in one checker cell, vertical in the other
        let cell = (((x as f32 + px) / period).floor() + ((y as f32 + py) / period).floor()) as i32;
        let thread = if cell.rem_euclid(2) == 0 {
            u.abs()
        } else {
            v.abs()
        };
        let shade = 0.75 + 0.25 * thread + 0.1 * (coarse[i] - 0.5) + 0.08 * (fine[i] - 0.5);
        Rgb(std::array::from_fn(|c| to_u8(base[c] * shade)))
    })
}

/// Geometry of the aligned object, needed by the "missing piece" defect.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Part {
    pub cx: f32,
    pub cy: f32,
    pub radius: f32,
}

impl Part {
    pub(crate) fn contains(&self, x: f32, y: f32) -> bool {
        (x - self.cx).hypot(y - self.cy) <= self.radius
    }
}

/// The dark background of the object images at one pixel.
pub(crate) fn background(x: u32, y: u32, side: u32, noise: &[f32]) -> Rgb<u8> {
    let i = (y * side + x) as usize;
    let v = 40.0 + 12.0 * noise[i];
    Rgb([to_u8(v), to_u8(v + 2.0), to_u8(v + 6.0)])
}

/// A centred turned part seen from above (like a bottle mouth): concentric rings, a bright rim
/// and a dark bore, on a dark noisy background; position jitters by ±2 % of the side.
pub(crate) fn part(side: u32, rng: &mut ChaCha8Rng) -> (RgbImage, Part, Vec<f32>) {
    let s = side as f32;
    let jitter = 0.02 * s;
    let p = Part {
        cx: s / 2.0 + rng.random_range(-jitter..=jitter),
        cy: s / 2.0 + rng.random_range(-jitter..=jitter),
        radius: s * rng.random_range(0.36..0.38),
    };
    let bg = value_noise(rng, side, 8);
    let sheen = value_noise(rng, side, 4);
    let tint = rng.random_range(-6.0..6.0);
    let img = RgbImage::from_fn(side, side, |x, y| {
        let r = (x as f32 - p.cx).hypot(y as f32 - p.cy) / p.radius;
        if r > 1.0 {
            return background(x, y, side, &bg);
        }
        let i = (y * side + x) as usize;
        let v = if r < 0.3 {
            30.0 + 20.0 * r // dark bore
        } else if r > 0.9 {
            200.0 + 30.0 * (1.0 - r) * 10.0 // bright rim
        } else {
            let ring = (r * 40.0).sin() * 0.5 + 0.5;
            110.0 + 40.0 * ring + 30.0 * (sheen[i] - 0.5)
        };
        Rgb([
            to_u8(v * 0.9 + tint),
            to_u8(v + tint),
            to_u8(v * 0.8 + 10.0),
        ])
    });
    (img, p, bg)
}
