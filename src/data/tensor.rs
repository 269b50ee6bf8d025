//! Image ↔ tensor conversion: RGB8 images to NCHW `f32` batches with a documented normalisation.
//!
//! Pixels are scaled to `[0, 1]` and then normalised per channel as `(x - mean) / std`. The
//! default is ImageNet's statistics (mean `[0.485, 0.456, 0.406]`, std `[0.229, 0.224, 0.225]`),
//! the convention of torchvision models, so pretrained torchvision weights work unchanged.
use crate::error::{Error, Result};
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Per-channel normalisation applied after scaling pixels to `[0, 1]`: `(x - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Channel means (R, G, B).
    pub mean: [f32; 3],
    /// Channel standard deviations (R, G, B), all > 0.
    pub std: [f32; 3],
}

impl Normalization {
    /// ImageNet statistics, the torchvision convention (the default).
    pub const IMAGENET: Normalization = Normalization {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    /// No normalisation beyond scaling to `[0, 1]`.
    pub const UNIT: Normalization = Normalization {
        mean: [0.0; 3],
        std: [1.0; 3],
    };

    /// Checks that every std is finite and > 0 and every mean finite.
    pub fn check(&self) -> Result<()> {
        if self.std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(Error::invalid_param(
                "normalization.std",
                format!("must be finite and > 0, got {:?}", self.std),
            ));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return Err(Error::invalid_param(
                "normalization.mean",
                format!("must be finite, got {:?}", self.mean),
            ));
        }
        Ok(())
    }

    /// `(scale, shift)` per channel such that a normalised value is `pixel * scale - shift`
    /// (pixel in 0..=255): the exact f32 arithmetic of [`images_to_nchw`], shared with the
    /// training batches normalised on the GPU so both give bit-identical tensors.
    pub(crate) fn pixel_affine(&self) -> ([f32; 3], [f32; 3]) {
        (
            std::array::from_fn(|c| 1.0 / (255.0 * self.std[c])),
            std::array::from_fn(|c| self.mean[c] / self.std[c]),
        )
    }
}

impl Default for Normalization {
    fn default() -> Self {
        Self::IMAGENET
    }
}

/// The common `(width, height)` of a non-empty batch; an error naming the first image of
/// another size otherwise.
pub(crate) fn batch_dimensions(images: &[RgbImage]) -> Result<(u32, u32)> {
    let first = images
        .first()
        .ok_or_else(|| Error::invalid_input("images", "empty batch: pass at least one image"))?;
    let (w, h) = first.dimensions();
    match images.iter().position(|img| img.dimensions() != (w, h)) {
        None => Ok((w, h)),
        Some(i) => Err(Error::invalid_input(
            "images",
            format!(
                "image {i} is {}x{} but image 0 is {w}x{h}; resize all images to one size",
                images[i].width(),
                images[i].height()
            ),
        )),
    }
}

/// Writes the images as a contiguous NCHW `f32` buffer (length `n * 3 * h * w`).
///
/// All images must have the same size; returns `(buffer, [n, 3, h, w])`. Usable without libtorch.
pub fn images_to_nchw(images: &[RgbImage], norm: &Normalization) -> Result<(Vec<f32>, [usize; 4])> {
    norm.check()?;
    let (w, h) = batch_dimensions(images)?;
    let (w, h) = (w as usize, h as usize);
    let plane = w * h;
    let mut out = vec![0f32; images.len() * 3 * plane];
    let (scale, shift) = norm.pixel_affine();
    for (i, img) in images.iter().enumerate() {
        let base = i * 3 * plane;
        for (p, px) in img.pixels().enumerate() {
            for c in 0..3 {
                out[base + c * plane + p] = px.0[c] as f32 * scale[c] - shift[c];
            }
        }
    }
    Ok((out, [images.len(), 3, h, w]))
}

/// Converts a batch of same-size RGB images to an NCHW `f32` tensor on `device`.
pub fn images_to_tensor(
    images: &[RgbImage],
    norm: &Normalization,
    device: tch::Device,
) -> Result<tch::Tensor> {
    let (buf, shape) = images_to_nchw(images, norm)?;
    let shape: Vec<i64> = shape.iter().map(|&s| s as i64).collect();
    // [n*3*h*w] -> [n, 3, h, w]
    let t = tch::Tensor::f_from_slice(&buf)?.f_reshape(&shape)?;
    Ok(t.f_to_device(device)?)
}

/// Inverse of [`images_to_tensor`] for one `[3, h, w]` (or `[1, 3, h, w]`) tensor: undoes the
/// normalisation, clamps to `[0, 255]` and rounds.
pub fn tensor_to_image(t: &tch::Tensor, norm: &Normalization) -> Result<RgbImage> {
    norm.check()?;
    let t = if t.dim() == 4 {
        t.f_squeeze_dim(0)?
    } else {
        t.shallow_clone()
    };
    let size = t.size();
    if size.len() != 3 || size[0] != 3 {
        return Err(Error::invalid_input(
            "tensor",
            format!("expected shape [3, h, w] or [1, 3, h, w], got {size:?}"),
        ));
    }
    let (h, w) = (size[1] as usize, size[2] as usize);
    let t = t
        .f_to_device(tch::Device::Cpu)?
        .f_to_kind(tch::Kind::Float)?
        .f_contiguous()?;
    let n = 3 * h * w;
    let mut buf = vec![0f32; n];
    t.f_copy_data(&mut buf, n)?;
    let mut img = RgbImage::new(w as u32, h as u32);
    for (p, px) in img.pixels_mut().enumerate() {
        for c in 0..3 {
            let v = (buf[c * h * w + p] * norm.std[c] + norm.mean[c]) * 255.0;
            px.0[c] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nchw_layout_and_normalisation_by_hand() {
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, image::Rgb([255, 0, 51]));
        img.put_pixel(1, 0, image::Rgb([0, 255, 102]));
        let (buf, shape) = images_to_nchw(&[img], &Normalization::UNIT).unwrap();
        assert_eq!(shape, [1, 3, 1, 2]);
        for (a, b) in buf.iter().zip([1.0f32, 0.0, 0.0, 1.0, 0.2, 0.4]) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        let n = Normalization {
            mean: [0.5; 3],
            std: [0.5; 3],
        };
        let img = RgbImage::from_pixel(1, 1, image::Rgb([255, 0, 51]));
        let (buf, _) = images_to_nchw(&[img], &n).unwrap();
        for (a, b) in buf.iter().zip([1.0f32, -1.0, -0.6]) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn size_mismatch_and_bad_std_are_errors() {
        let a = RgbImage::new(2, 2);
        let b = RgbImage::new(3, 2);
        assert!(matches!(
            images_to_nchw(&[a.clone(), b], &Normalization::IMAGENET),
            Err(Error::InvalidInput { .. })
        ));
        let bad = Normalization {
            mean: [0.0; 3],
            std: [0.0, 1.0, 1.0],
        };
        assert!(images_to_nchw(&[a], &bad).is_err());
        assert!(images_to_nchw(&[], &Normalization::IMAGENET).is_err());
    }

    #[test]
    fn tensor_roundtrip_is_exact() {
        let img = RgbImage::from_fn(5, 3, |x, y| image::Rgb([(x * 40) as u8, (y * 80) as u8, 7]));
        let t = images_to_tensor(
            std::slice::from_ref(&img),
            &Normalization::IMAGENET,
            tch::Device::Cpu,
        )
        .unwrap();
        assert_eq!(t.size(), vec![1, 3, 3, 5]);
        let back = tensor_to_image(&t, &Normalization::IMAGENET).unwrap();
        assert_eq!(back, img);
    }
}
