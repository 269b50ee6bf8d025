//! Label sets (paper §3.1, Table 1/4) and the [`Augmentation`] that turns an image and a seed
//! into labelled views.
use image::{GrayImage, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::baselines::{cutout_with, rotate_quarters, scar_cutout_with, CutoutFill};
use super::cutpaste::{cutpaste_with, CutPasteParams};
use super::jitter::ColorJitter;
use super::preaugment::PreAugment;
use super::scar::{scar_with, ScarParams};
use crate::{Error, Result};

/// Which views an image yields and how they are labelled. View 0 is always the normal image
/// (label 0); for [`Rotation`](Variant::Rotation) it is the 0° rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Variant {
    /// Normal (0) vs CutPaste (1).
    Binary,
    /// Normal (0) vs Scar (1).
    BinaryScar,
    /// Normal (0) vs either CutPaste or Scar (1), each with probability ½.
    Union,
    /// Normal (0) vs CutPaste (1) vs Scar (2): the paper's best.
    ThreeWay,
    /// Normal (0) vs Cutout (1) — baseline.
    Cutout,
    /// Normal (0) vs Scar-cutout (1) — baseline.
    ScarCutout,
    /// Rotation by 0/90/180/270° counter-clockwise, labels 0–3 — baseline.
    Rotation,
}

impl Variant {
    /// Number of classes the classifier head needs.
    pub fn num_classes(self) -> usize {
        match self {
            Variant::ThreeWay => 3,
            Variant::Rotation => 4,
            _ => 2,
        }
    }

    /// Number of views produced per source image.
    pub fn views_per_image(self) -> usize {
        self.num_classes()
    }
}

/// What produced a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ViewKind {
    /// The (pre-augmented) source image.
    Normal,
    /// A CutPaste patch was pasted.
    CutPaste,
    /// A scar was pasted.
    Scar,
    /// A Cutout rectangle was filled.
    Cutout,
    /// A Scar-cutout was filled.
    ScarCutout,
    /// Rotated by this many quarter turns counter-clockwise (1–3).
    Rotated(u8),
}

/// One labelled training view.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    /// The image (same size as the source).
    pub image: RgbImage,
    /// Class label in `0..num_classes()`.
    pub label: usize,
    /// 255 where the synthetic defect may have changed pixels relative to the normal view
    /// (view 0), 0 elsewhere; `None` for the normal view and for rotations.
    pub footprint: Option<GrayImage>,
    /// What produced the view.
    pub kind: ViewKind,
}

/// A complete augmentation configuration: label set, CutPaste and Scar parameters, Cutout fill
/// and the optional pre-augmentation. Constructors give the paper's values; setters consume and
/// return `self`; [`check`](Self::check) validates everything (and [`views`](Self::views) calls it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Augmentation {
    variant: Variant,
    cutpaste: CutPasteParams,
    scar: ScarParams,
    cutout_fill: CutoutFill,
    pre_augment: Option<PreAugment>,
}

impl Augmentation {
    /// A label set with the paper's parameters and the crate's default pre-augmentation.
    pub fn new(variant: Variant) -> Self {
        Self {
            variant,
            cutpaste: CutPasteParams::paper(),
            scar: ScarParams::paper(),
            cutout_fill: CutoutFill::Gray,
            pre_augment: Some(PreAugment::paper()),
        }
    }

    /// Normal / CutPaste / Scar (3 views per image).
    pub fn three_way() -> Self {
        Self::new(Variant::ThreeWay)
    }
    /// Normal vs CutPaste (2 views per image).
    pub fn cutpaste() -> Self {
        Self::new(Variant::Binary)
    }
    /// Normal vs Scar (2 views per image).
    pub fn scar() -> Self {
        Self::new(Variant::BinaryScar)
    }
    /// Normal vs CutPaste-or-Scar (2 views per image).
    pub fn union() -> Self {
        Self::new(Variant::Union)
    }
    /// Normal vs grey Cutout (2 views per image).
    pub fn cutout() -> Self {
        Self::new(Variant::Cutout)
    }
    /// Normal vs random-colour Scar-cutout (2 views per image).
    pub fn scar_cutout() -> Self {
        Self::new(Variant::ScarCutout)
    }
    /// Rotation prediction 0/90/180/270° (4 views per image; square images only).
    pub fn rotation() -> Self {
        Self::new(Variant::Rotation)
    }

    /// Sets the CutPaste (and Cutout) area-ratio range.
    pub fn area_ratio(mut self, lo: f64, hi: f64) -> Self {
        self.cutpaste.area_ratio = (lo, hi);
        self
    }
    /// Sets the CutPaste (and Cutout) aspect-ratio range (width / height).
    pub fn aspect_ratio(mut self, lo: f64, hi: f64) -> Self {
        self.cutpaste.aspect_ratio = (lo, hi);
        self
    }
    /// Sets the scar width range in pixels (inclusive).
    pub fn scar_width(mut self, lo: u32, hi: u32) -> Self {
        self.scar.width = (lo, hi);
        self
    }
    /// Sets the scar length range in pixels (inclusive).
    pub fn scar_length(mut self, lo: u32, hi: u32) -> Self {
        self.scar.length = (lo, hi);
        self
    }
    /// Sets the scar rotation range in degrees.
    pub fn scar_rotation(mut self, lo: f64, hi: f64) -> Self {
        self.scar.rotation_deg = (lo, hi);
        self
    }
    /// Sets the jitter of pasted CutPaste patches and scars.
    pub fn patch_jitter(mut self, jitter: ColorJitter) -> Self {
        self.cutpaste.jitter = jitter;
        self.scar.jitter = jitter;
        self
    }
    /// Sets the pre-augmentation; `None` turns it off.
    pub fn pre_augment(mut self, pre: Option<PreAugment>) -> Self {
        self.pre_augment = pre;
        self
    }
    /// Sets the Cutout fill.
    pub fn cutout_fill(mut self, fill: CutoutFill) -> Self {
        self.cutout_fill = fill;
        self
    }
    /// Replaces all CutPaste parameters.
    pub fn cutpaste_params(mut self, params: CutPasteParams) -> Self {
        self.cutpaste = params;
        self
    }
    /// Replaces all Scar parameters.
    pub fn scar_params(mut self, params: ScarParams) -> Self {
        self.scar = params;
        self
    }

    /// The label set.
    pub fn variant(&self) -> Variant {
        self.variant
    }
    /// The CutPaste (and Cutout geometry) parameters.
    pub fn cutpaste_config(&self) -> &CutPasteParams {
        &self.cutpaste
    }
    /// The Scar (and Scar-cutout geometry) parameters.
    pub fn scar_config(&self) -> &ScarParams {
        &self.scar
    }
    /// The Cutout fill.
    pub fn cutout_fill_mode(&self) -> CutoutFill {
        self.cutout_fill
    }
    /// The pre-augmentation, if any.
    pub fn pre_augment_config(&self) -> Option<&PreAugment> {
        self.pre_augment.as_ref()
    }

    /// Validates every parameter the label set uses; errors with [`Error::InvalidParam`].
    pub fn check(&self) -> Result<()> {
        if let Some(pre) = &self.pre_augment {
            pre.check()?;
        }
        if self.uses_patches() {
            self.cutpaste.check()?;
        }
        if self.uses_scars() {
            self.scar.check()?;
        }
        Ok(())
    }

    /// Errors when a `width × height` image is too small for this label set
    /// ([`Error::ImageTooSmall`]) or, for rotation, not square ([`Error::InvalidInput`]).
    /// Independent of the seed.
    pub fn check_image(&self, width: u32, height: u32) -> Result<()> {
        if width == 0 || height == 0 {
            return Err(Error::ImageTooSmall {
                width,
                height,
                min: 1,
                what: "any augmentation".into(),
            });
        }
        if self.uses_patches() {
            self.cutpaste.check_image(width, height)?;
        }
        if self.uses_scars() {
            self.scar.check_image(width, height)?;
        }
        if self.variant == Variant::Rotation && width != height {
            return Err(Error::invalid_input(
                "image",
                format!("rotation prediction needs square images, got {width}x{height}; resize or crop first"),
            ));
        }
        Ok(())
    }

    fn uses_patches(&self) -> bool {
        matches!(
            self.variant,
            Variant::Binary | Variant::Union | Variant::ThreeWay | Variant::Cutout
        )
    }

    fn uses_scars(&self) -> bool {
        matches!(
            self.variant,
            Variant::BinaryScar | Variant::Union | Variant::ThreeWay | Variant::ScarCutout
        )
    }

    /// Number of classes: 2, 3 (three-way) or 4 (rotation).
    pub fn num_classes(&self) -> usize {
        self.variant.num_classes()
    }

    /// Views per source image: 2 for the binary sets, 3 for three-way, 4 for rotation.
    pub fn views_per_image(&self) -> usize {
        self.variant.views_per_image()
    }

    /// The labelled views of one image. The image is pre-augmented once (random stream 0 of
    /// `seed`); view `k` is drawn from stream `k + 1`, so views are reproducible one by one.
    /// View 0 is the pre-augmented image itself (label 0); every synthetic view equals view 0
    /// outside its footprint.
    ///
    /// Errors: [`Error::InvalidParam`] for bad parameters, [`Error::InvalidInput`] for a
    /// non-square image with rotation,
    /// [`Error::ImageTooSmall`] for images too small for the patches or scars.
    pub fn views(&self, image: &RgbImage, seed: u64) -> Result<Vec<View>> {
        self.check()?;
        self.check_image(image.width(), image.height())?;
        Ok(self.views_checked(image, seed))
    }

    /// [`views`](Self::views) after the checks.
    pub(crate) fn views_checked(&self, image: &RgbImage, seed: u64) -> Vec<View> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let base = match &self.pre_augment {
            Some(pre) => pre.apply_with(image, &mut rng).image,
            None => image.clone(),
        };
        let mut views: Vec<View> = (1..self.views_per_image())
            .map(|k| {
                rng.set_stream(k as u64);
                rng.set_word_pos(0);
                self.synthetic_view(&base, k, &mut rng)
            })
            .collect();
        views.insert(0, normal(base));
        views
    }

    /// View `k ≥ 1` of the pre-augmented `base`.
    fn synthetic_view(&self, base: &RgbImage, k: usize, rng: &mut ChaCha8Rng) -> View {
        let defect = |image, footprint, kind| View {
            image,
            label: 1,
            footprint: Some(footprint),
            kind,
        };
        match (self.variant, k) {
            (Variant::Rotation, _) => View {
                // Square-checked in `check_image`; the fallback keeps this total.
                image: rotate_quarters(base, k).unwrap_or_else(|_| base.clone()),
                label: k,
                footprint: None,
                kind: ViewKind::Rotated(k as u8),
            },
            (Variant::Binary, _) | (Variant::ThreeWay, 1) => {
                let o = cutpaste_with(base, &self.cutpaste, rng);
                defect(o.image, o.footprint, ViewKind::CutPaste)
            }
            (Variant::BinaryScar, _) | (Variant::ThreeWay, _) => {
                let o = scar_with(base, &self.scar, rng);
                let label = if self.variant == Variant::ThreeWay {
                    2
                } else {
                    1
                };
                View {
                    label,
                    ..defect(o.image, o.footprint, ViewKind::Scar)
                }
            }
            (Variant::Union, _) => {
                if rng.random_bool(0.5) {
                    let o = cutpaste_with(base, &self.cutpaste, rng);
                    defect(o.image, o.footprint, ViewKind::CutPaste)
                } else {
                    let o = scar_with(base, &self.scar, rng);
                    defect(o.image, o.footprint, ViewKind::Scar)
                }
            }
            (Variant::Cutout, _) => {
                let o = cutout_with(base, &self.cutpaste, self.cutout_fill, rng);
                defect(o.image, o.footprint, ViewKind::Cutout)
            }
            (Variant::ScarCutout, _) => {
                let o = scar_cutout_with(base, &self.scar, rng);
                defect(o.image, o.footprint, ViewKind::ScarCutout)
            }
        }
    }
}

/// The normal view.
fn normal(image: RgbImage) -> View {
    View {
        image,
        label: 0,
        footprint: None,
        kind: ViewKind::Normal,
    }
}
