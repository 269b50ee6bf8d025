//! Local defects drawn into a clean image, each with its exact pixel mask: the mask is the
//! defect's footprint and every pixel changed by the defect lies inside it (and nearly every
//! footprint pixel is changed).
use super::surfaces::{background, to_u8, Part};
use image::{GrayImage, Luma, Rgb, RgbImage};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The kinds of defects the synthetic generator draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefectKind {
    /// A thin bright or dark polyline.
    Scratch,
    /// A dark elliptical hole.
    Hole,
    /// A discoloured blob.
    Stain,
    /// A cluster of foreign specks.
    Contamination,
    /// A sector of the object is missing (object images only).
    Missing,
}

impl DefectKind {
    /// The folder name used in `test/` and `ground_truth/`.
    pub fn name(self) -> &'static str {
        match self {
            DefectKind::Scratch => "scratch",
            DefectKind::Hole => "hole",
            DefectKind::Stain => "stain",
            DefectKind::Contamination => "contamination",
            DefectKind::Missing => "missing",
        }
    }
}

/// Where on the image a defect may be centred.
pub(crate) enum Region {
    Anywhere,
    OnPart(Part),
}

impl Region {
    fn center(&self, side: u32, rng: &mut ChaCha8Rng) -> (f32, f32) {
        let s = side as f32;
        match self {
            Region::Anywhere => (
                rng.random_range(0.15 * s..0.85 * s),
                rng.random_range(0.15 * s..0.85 * s),
            ),
            Region::OnPart(p) => {
                let a = rng.random_range(0.0..std::f32::consts::TAU);
                let r = p.radius * rng.random_range(0.35..0.8);
                (p.cx + r * a.cos(), p.cy + r * a.sin())
            }
        }
    }
}

/// Draws `kind` into `img` and returns its mask (255 on the footprint).
pub(crate) fn draw(
    kind: DefectKind,
    img: &mut RgbImage,
    region: &Region,
    bg_noise: Option<&[f32]>,
    rng: &mut ChaCha8Rng,
) -> GrayImage {
    let side = img.width();
    let (cx, cy) = region.center(side, rng);
    let s = side as f32;
    let mask = match kind {
        DefectKind::Scratch => scratch_mask(side, cx, cy, rng),
        DefectKind::Hole => {
            let (a, b) = (
                s * rng.random_range(0.03..0.07),
                s * rng.random_range(0.03..0.07),
            );
            shape_mask(side, |x, y| {
                ((x - cx) / a).powi(2) + ((y - cy) / b).powi(2) <= 1.0
            })
        }
        DefectKind::Stain => blob_mask(side, cx, cy, s * 0.05, rng, 4),
        DefectKind::Contamination => blob_mask(side, cx, cy, s * 0.012, rng, 6),
        DefectKind::Missing => match (region, bg_noise) {
            (Region::OnPart(p), Some(_)) => missing_mask(side, *p, rng),
            _ => blob_mask(side, cx, cy, s * 0.05, rng, 4),
        },
    };
    let colour = defect_colour(kind, rng);
    paint(img, &mask, |x, y, old| match (kind, bg_noise) {
        (DefectKind::Missing, Some(noise)) => background(x, y, side, noise),
        (DefectKind::Stain, _) => Rgb(std::array::from_fn(|c| to_u8(old.0[c] as f32 * colour[c]))),
        _ => Rgb(std::array::from_fn(|c| to_u8(colour[c] * 255.0))),
    });
    mask
}

fn defect_colour(kind: DefectKind, rng: &mut ChaCha8Rng) -> [f32; 3] {
    match kind {
        DefectKind::Scratch if rng.random_bool(0.5) => [0.95, 0.93, 0.9],
        DefectKind::Scratch => [0.08, 0.07, 0.07],
        DefectKind::Hole => [0.06, 0.05, 0.04],
        DefectKind::Stain => [
            rng.random_range(0.5..0.7),
            rng.random_range(0.4..0.55),
            rng.random_range(0.2..0.35),
        ],
        DefectKind::Contamination => [
            rng.random_range(0.1..0.3),
            rng.random_range(0.6..0.9),
            rng.random_range(0.1..0.4),
        ],
        DefectKind::Missing => [0.0; 3],
    }
}

/// Applies `f` on the footprint. A pixel that `f` would leave unchanged is nudged so that the
/// mask stays exact (footprint = changed pixels, up to the nudge).
fn paint(img: &mut RgbImage, mask: &GrayImage, f: impl Fn(u32, u32, Rgb<u8>) -> Rgb<u8>) {
    for (x, y, m) in mask.enumerate_pixels() {
        if m.0[0] == 0 {
            continue;
        }
        let old = *img.get_pixel(x, y);
        let mut new = f(x, y, old);
        if new == old {
            let v = old.0[1];
            new.0[1] = if v < 128 { v + 24 } else { v - 24 };
        }
        img.put_pixel(x, y, new);
    }
}

fn shape_mask(side: u32, inside: impl Fn(f32, f32) -> bool) -> GrayImage {
    GrayImage::from_fn(side, side, |x, y| {
        Luma([if inside(x as f32 + 0.5, y as f32 + 0.5) {
            255
        } else {
            0
        }])
    })
}

/// Union of `n` discs scattered around `(cx, cy)`, radii around `r`.
fn blob_mask(side: u32, cx: f32, cy: f32, r: f32, rng: &mut ChaCha8Rng, n: usize) -> GrayImage {
    let discs: Vec<(f32, f32, f32)> = (0..n)
        .map(|_| {
            let rr = r * rng.random_range(0.6..1.4);
            let spread = if n > 4 { 6.0 * r } else { r };
            (
                cx + rng.random_range(-spread..spread),
                cy + rng.random_range(-spread..spread),
                rr.max(1.5),
            )
        })
        .collect();
    shape_mask(side, |x, y| {
        discs
            .iter()
            .any(|&(dx, dy, rr)| (x - dx).hypot(y - dy) <= rr)
    })
}

/// A polyline of 2–3 segments of total length 15–35 % of the side, 1–3 px wide.
fn scratch_mask(side: u32, cx: f32, cy: f32, rng: &mut ChaCha8Rng) -> GrayImage {
    let s = side as f32;
    let width = rng.random_range(1.0..3.0f32).max(1.0);
    let n = rng.random_range(2..=3);
    let seg = s * rng.random_range(0.15..0.35) / n as f32;
    let mut angle = rng.random_range(0.0..std::f32::consts::TAU);
    let mut pts = vec![(cx, cy)];
    for _ in 0..n {
        angle += rng.random_range(-0.5..0.5);
        let (x, y) = pts[pts.len() - 1];
        pts.push((
            (x + seg * angle.cos()).clamp(1.0, s - 1.0),
            (y + seg * angle.sin()).clamp(1.0, s - 1.0),
        ));
    }
    shape_mask(side, |x, y| {
        pts.windows(2)
            .any(|w| dist_to_segment((x, y), w[0], w[1]) <= width / 2.0 + 0.5)
    })
}

fn dist_to_segment(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (p.0 - a.0 - t * dx).hypot(p.1 - a.1 - t * dy)
}

/// A sector of the part (25–60°) from 60 % of its radius to its edge.
fn missing_mask(side: u32, p: Part, rng: &mut ChaCha8Rng) -> GrayImage {
    let start = rng.random_range(0.0..std::f32::consts::TAU);
    let width = rng.random_range(25f32..60.0).to_radians();
    shape_mask(side, |x, y| {
        let (dx, dy) = (x - p.cx, y - p.cy);
        let r = dx.hypot(dy);
        let a = (dy.atan2(dx) - start).rem_euclid(std::f32::consts::TAU);
        p.contains(x, y) && r >= 0.6 * p.radius && a <= width
    })
}
