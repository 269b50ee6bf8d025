//! Rectangles, CutPaste patch-size sampling and the rasterised footprint of a rotated scar.
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// An axis-aligned rectangle of whole pixels: columns `x..x + width`, rows `y..y + height`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rect {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Rect {
    /// Number of pixels covered.
    pub fn area(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    /// True when pixel `(x, y)` lies inside.
    pub fn contains(&self, x: u32, y: u32) -> bool {
        x >= self.x && y >= self.y && x - self.x < self.width && y - self.y < self.height
    }

    /// True when the rectangle lies entirely inside a `width × height` image.
    pub fn fits_in(&self, width: u32, height: u32) -> bool {
        u64::from(self.x) + u64::from(self.width) <= u64::from(width)
            && u64::from(self.y) + u64::from(self.height) <= u64::from(height)
    }

    /// A `w × h` rectangle at a uniformly random position fully inside a `width × height` image.
    /// The caller guarantees `w <= width` and `h <= height`.
    pub(crate) fn random_inside(
        w: u32,
        h: u32,
        width: u32,
        height: u32,
        rng: &mut ChaCha8Rng,
    ) -> Rect {
        Rect {
            x: rng.random_range(0..=width - w),
            y: rng.random_range(0..=height - h),
            width: w,
            height: h,
        }
    }
}

/// Samples a `U(lo, hi)` float (`lo == hi` allowed).
pub(crate) fn uniform(rng: &mut ChaCha8Rng, (lo, hi): (f64, f64)) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// A drawn CutPaste patch size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct PatchSize {
    pub width: u32,
    pub height: u32,
    pub area_ratio: f64,
    pub aspect_ratio: f64,
}

/// Draws a patch size as torchvision's `RandomErasing` and the CutPaste re-implementations do
/// (paper Appendix A.2): area ratio `r ~ U(area)`, aspect ratio `a` log-uniform in `aspect`,
/// width `round(√(r·W·H·a))`, height `round(√(r·W·H / a))`.
///
/// [our choice] Instead of retrying when the patch does not fit (possible only for elongated
/// images), the aspect-ratio interval is first narrowed to the ratios that fit; for square images
/// the interval is never narrowed, so the paper's distribution is exact. Sides are clamped to
/// `1..=W` / `1..=H` against rounding.
pub(crate) fn sample_patch_size(
    width: u32,
    height: u32,
    area: (f64, f64),
    aspect: (f64, f64),
    rng: &mut ChaCha8Rng,
) -> PatchSize {
    let (w, h) = (f64::from(width), f64::from(height));
    let area_ratio = uniform(rng, area);
    let target = area_ratio * w * h;
    // Feasible aspect ratios: √(target·a) ≤ W  ⇔  a ≤ W²/target;  √(target/a) ≤ H  ⇔  a ≥ target/H².
    let lo = aspect.0.max(target / (h * h));
    let hi = aspect.1.min(w * w / target);
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, hi) };
    let aspect_ratio = uniform(rng, (lo.ln(), hi.ln())).exp();
    PatchSize {
        width: ((target * aspect_ratio).sqrt().round() as u32).clamp(1, width),
        height: ((target / aspect_ratio).sqrt().round() as u32).clamp(1, height),
        area_ratio,
        aspect_ratio,
    }
}

/// Checks that the smallest CutPaste patch (lowest area ratio, most extreme aspect ratio) is at
/// least one pixel wide on a `width × height` image.
pub(crate) fn check_patch_fits(
    width: u32,
    height: u32,
    area: (f64, f64),
    aspect: (f64, f64),
    what: &str,
) -> Result<()> {
    // Smallest side of the smallest patch: √(r_lo·W·H·a_min) with a_min = min(a_lo, 1/a_hi).
    let a_min = aspect.0.min(1.0 / aspect.1);
    let k = (area.0 * a_min).sqrt();
    let smallest = k * (f64::from(width) * f64::from(height)).sqrt();
    if smallest < 0.5 || width == 0 || height == 0 {
        return Err(Error::ImageTooSmall {
            width,
            height,
            min: (0.5 / k).ceil() as u32,
            what: what.to_string(),
        });
    }
    Ok(())
}

/// Width and height of the bounding box of a `w × l` rectangle rotated by `theta` radians.
pub(crate) fn rotated_extent(w: f64, l: f64, theta: f64) -> (f64, f64) {
    let (s, c) = theta.sin_cos();
    (w * c.abs() + l * s.abs(), w * s.abs() + l * c.abs())
}

/// The largest bounding box (width, height) of a `w × l` rectangle over rotations in
/// `[lo, hi]` degrees: checked at both ends and at every interior critical angle.
pub(crate) fn max_rotated_extent(w: f64, l: f64, (lo, hi): (f64, f64)) -> (f64, f64) {
    let (a, b) = (lo.to_radians(), hi.to_radians());
    let half_pi = std::f64::consts::FRAC_PI_2;
    // Extremes of |w cos| + |l sin| and |w sin| + |l cos| lie at ±atan(l/w), ±atan(w/l) (mod π)
    // and where a sine or cosine changes sign (multiples of π/2).
    let bases = [
        0.0,
        (l / w).atan(),
        -(l / w).atan(),
        (w / l).atan(),
        -(w / l).atan(),
    ];
    let mut best = (0.0f64, 0.0f64);
    let mut consider = |t: f64| {
        let (bw, bh) = rotated_extent(w, l, t);
        best = (best.0.max(bw), best.1.max(bh));
    };
    consider(a);
    consider(b);
    for base in bases {
        let k0 = ((a - base) / half_pi).ceil() as i64;
        let k1 = ((b - base) / half_pi).floor() as i64;
        for k in k0..=k1.min(k0 + 8) {
            consider(base + k as f64 * half_pi);
        }
    }
    best
}

/// The pixel raster of a `w × l` rectangle rotated by `angle_deg` (counter-clockwise on screen,
/// as PIL's `rotate`), sampled with nearest neighbour: each bounding-box pixel whose centre maps
/// back inside the unrotated rectangle takes that source pixel.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RotatedRaster {
    /// Bounding-box width.
    pub width: u32,
    /// Bounding-box height.
    pub height: u32,
    /// For every bounding-box pixel (row-major), the source pixel `(u, v)` in the unrotated
    /// rectangle, or `None` outside the rotated footprint.
    pub source: Vec<Option<(u32, u32)>>,
}

impl RotatedRaster {
    /// Rasterises the rotation of a `w × l` rectangle (`w, l ≥ 1`).
    pub fn new(w: u32, l: u32, angle_deg: f64) -> Self {
        let theta = angle_deg.to_radians();
        let (ew, eh) = rotated_extent(f64::from(w), f64::from(l), theta);
        // The tiny tolerance keeps exact integers (e.g. 0°) from growing by one pixel.
        let width = ((ew - 1e-9).ceil() as u32).max(1);
        let height = ((eh - 1e-9).ceil() as u32).max(1);
        let (s, c) = theta.sin_cos();
        let (half_w, half_l) = (f64::from(w) / 2.0, f64::from(l) / 2.0);
        let (cx, cy) = (f64::from(width) / 2.0, f64::from(height) / 2.0);
        let mut source = Vec::with_capacity(width as usize * height as usize);
        for j in 0..height {
            let py = f64::from(j) + 0.5 - cy;
            for i in 0..width {
                let px = f64::from(i) + 0.5 - cx;
                // Inverse of the on-screen counter-clockwise rotation (y axis points down).
                let u = c * px - s * py + half_w;
                let v = s * px + c * py + half_l;
                let inside = u >= 0.0 && v >= 0.0 && u < f64::from(w) && v < f64::from(l);
                source.push(inside.then(|| ((u as u32).min(w - 1), (v as u32).min(l - 1))));
            }
        }
        Self {
            width,
            height,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unrotated_raster_is_the_rectangle_itself() {
        let r = RotatedRaster::new(3, 5, 0.0);
        assert_eq!((r.width, r.height), (3, 5));
        assert_eq!(r.source[0], Some((0, 0)));
        assert_eq!(r.source[14], Some((2, 4)));
        assert!(r.source.iter().all(Option::is_some));
        // 90° swaps the sides and every pixel is still covered.
        let r = RotatedRaster::new(3, 5, 90.0);
        assert_eq!((r.width, r.height), (5, 3));
        assert!(r.source.iter().all(Option::is_some));
    }

    #[test]
    fn max_extent_matches_hand_computed_values() {
        // 16 × 25 over ±45°: width peaks at 45° (41/√2), height at atan(16/25) (√(16² + 25²)).
        let (bw, bh) = max_rotated_extent(16.0, 25.0, (-45.0, 45.0));
        assert!((bw - 41.0 / 2f64.sqrt()).abs() < 1e-9, "{bw}");
        assert!(
            (bh - (16f64 * 16.0 + 25.0 * 25.0).sqrt()).abs() < 1e-9,
            "{bh}"
        );
        let (bw, bh) = max_rotated_extent(16.0, 25.0, (0.0, 0.0));
        assert_eq!((bw, bh), (16.0, 25.0));
    }
}
