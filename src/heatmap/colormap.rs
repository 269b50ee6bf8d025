//! The Turbo colour map (A. Mikhailov, "Turbo, An Improved Rainbow Colormap for
//! Visualization", Google AI Blog, 2019), evaluated from its published degree-5 polynomial fit
//! (R. Du's fit of the 256-entry table; Apache-2.0 coefficients). Dark blue at 0, blue → cyan →
//! green at the middle → yellow → red, dark red at 1. The fit is close in the interior and
//! darker than the table at the very ends (within 0.13 per channel at t = 0 and t = 1).
//!
//! Kept instead of the `colorous` crate's `TURBO`: that one is another fit of the same table
//! (d3's coefficients), evaluated in f32 and truncated to whole 8-bit values. Its colours differ
//! from these by up to 2.3/255 (red near t = 0.9, green near t = 0.8; at t = 0.5, a point the
//! overlay tests pin, red is 150.07/255 here and 148/255 there), and [`turbo`] returns the
//! continuous values that the overlay blends with the image before rounding once.

/// Polynomial coefficients c₀…c₅ per channel (R, G, B) of `c₀ + c₁t + … + c₅t⁵`.
const TURBO: [[f64; 6]; 3] = [
    [
        0.135_721_38,
        4.615_392_60,
        -42.660_322_58,
        132.131_082_34,
        -152.942_393_96,
        59.286_379_43,
    ],
    [
        0.091_402_61,
        2.194_188_39,
        4.842_966_58,
        -14.185_033_33,
        4.277_298_57,
        2.829_566_04,
    ],
    [
        0.106_673_30,
        12.641_946_08,
        -60.582_048_36,
        110.362_767_71,
        -89.903_109_12,
        27.348_249_73,
    ],
];

/// The Turbo colour of `t` (clamped to `[0, 1]`; NaN is treated as 0) as linear `[0, 1]` RGB
/// channel values, each clamped to `[0, 1]`.
pub fn turbo(t: f32) -> [f32; 3] {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) } as f64;
    TURBO.map(|c| {
        // Horner: c0 + t(c1 + t(c2 + t(c3 + t(c4 + t c5))))
        let v = c.iter().rev().fold(0.0, |acc, &ci| acc * t + ci);
        v.clamp(0.0, 1.0) as f32
    })
}

/// [`turbo`] as 8-bit RGB (rounded to nearest).
pub fn turbo_u8(t: f32) -> [u8; 3] {
    turbo(t).map(|v| (v * 255.0).round() as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first and last entries of the original 256-entry Turbo table, and which channel
    /// dominates along the map (blue, then green, then red).
    #[test]
    fn polynomial_follows_the_published_table() {
        let ends = [
            (0.0, [0.18995, 0.07176, 0.23217]),
            (1.0, [0.47960, 0.01583, 0.01055]),
        ];
        for (t, want) in ends {
            let got = turbo(t);
            for c in 0..3 {
                assert!((got[c] - want[c]).abs() < 0.13, "t={t} ch {c}: {got:?}");
            }
        }
        let argmax = |v: [f32; 3]| (0..3).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
        assert_eq!(argmax(turbo(0.1)), 2);
        assert_eq!(argmax(turbo(0.5)), 1);
        assert_eq!(argmax(turbo(0.9)), 0);
    }

    #[test]
    fn clamps_out_of_range_and_nan() {
        assert_eq!(turbo(-3.0), turbo(0.0));
        assert_eq!(turbo(7.0), turbo(1.0));
        assert_eq!(turbo(f32::NAN), turbo(0.0));
        // hand-computed: c0 of each channel at t = 0 → round(255 c0)
        assert_eq!(turbo_u8(0.0), [35, 23, 27]);
    }
}
