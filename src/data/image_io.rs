//! Loading images and masks from disk as RGB8 / binary masks, and resizing them.
//!
//! Any format the `image` crate decodes with the enabled features (PNG, JPEG, BMP, TIFF, GIF,
//! WebP, PNM) is accepted; grey, grey+alpha, RGBA and 16-bit images all become RGB8 (alpha is
//! dropped, 16-bit values are scaled to 8 bits). Images are resized with
//! [`RESIZE_FILTER`] (bilinear with antialiasing, like torchvision's default `Resize`); masks with
//! nearest neighbour and then binarised at 128.
use crate::error::{Error, Result};
use image::imageops::FilterType;
use image::{ColorType, DynamicImage, GrayImage, ImageDecoder, ImageReader, Limits, RgbImage};
use std::path::Path;

/// Memory one image may take while it is decoded and converted (the `image` crate's default
/// allocation limit, 512 MiB): e.g. an 8-bit grey image of up to 134 megapixels, since its RGB8
/// copy takes three times its decoded size.
pub const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;

/// The default square side images are resized to (the paper's 256×256 input).
pub const DEFAULT_SIDE: u32 = 256;

/// Filter used to resize images: `Triangle` (bilinear, antialiased when shrinking).
pub const RESIZE_FILTER: FilterType = FilterType::Triangle;

/// File extensions treated as images (case-insensitive). Everything else in a dataset folder
/// (`.DS_Store`, `license.txt`, …) is ignored.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "bmp", "tif", "tiff", "gif", "webp", "pnm", "ppm", "pgm",
];

/// True when `path` has one of the [`IMAGE_EXTENSIONS`] and is not a hidden file.
pub fn is_image_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    let ext_ok = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
    ext_ok && !hidden && path.is_file()
}

/// Decodes `path` (format guessed from the content, not the extension: a JPEG saved as `.png`
/// still loads, a text file named `.png` is undecodable) into `T`'s colour type within the
/// `image` crate's default memory limit ([`MAX_DECODE_BYTES`]), counting the decoded buffer *and*
/// the colour conversion that follows: a file whose pixels would exceed it is an
/// [`Error::Image`] ("Memory limit exceeded") before the pixel buffers are allocated.
fn decode<T>(path: &Path, target: ColorType, convert: impl FnOnce(DynamicImage) -> T) -> Result<T> {
    let reader = ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let image_err = |source| Error::Image {
        path: path.to_path_buf(),
        source,
    };
    let mut decoder = reader.into_decoder().map_err(image_err)?;
    let (w, h) = decoder.dimensions();
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits.reserve(decoder.total_bytes()).map_err(image_err)?;
    if decoder.color_type() != target {
        let converted = u64::from(w) * u64::from(h) * u64::from(target.bytes_per_pixel());
        limits.reserve(converted).map_err(image_err)?;
    }
    decoder.set_limits(limits).map_err(image_err)?;
    Ok(convert(
        DynamicImage::from_decoder(decoder).map_err(image_err)?,
    ))
}

/// Loads an image file as RGB8 at its own size. Decoding and the conversion to RGB8 together
/// stay within [`MAX_DECODE_BYTES`].
pub fn load_rgb(path: impl AsRef<Path>) -> Result<RgbImage> {
    decode(path.as_ref(), ColorType::Rgb8, DynamicImage::into_rgb8)
}

/// Loads an image file as RGB8 and resizes it to `side`×`side` with [`RESIZE_FILTER`]
/// (no resize when it already has that size).
pub fn load_rgb_resized(path: impl AsRef<Path>, side: u32) -> Result<RgbImage> {
    check_side(side)?;
    Ok(resize_rgb(&load_rgb(path)?, side))
}

/// Resizes an RGB image to `side`×`side` with [`RESIZE_FILTER`]; returns a copy when the size
/// already matches.
pub fn resize_rgb(img: &RgbImage, side: u32) -> RgbImage {
    if img.dimensions() == (side, side) {
        return img.clone();
    }
    image::imageops::resize(img, side, side, RESIZE_FILTER)
}

/// Loads a mask file as a binary mask: 255 where the (grey-converted) value is ≥ 128, else 0.
pub fn load_mask(path: impl AsRef<Path>) -> Result<GrayImage> {
    let mut mask = decode(path.as_ref(), ColorType::L8, DynamicImage::into_luma8)?;
    binarize_in_place(&mut mask);
    Ok(mask)
}

/// Resizes a mask to `side`×`side` with nearest-neighbour and keeps it binary (0/255).
pub fn resize_mask(mask: &GrayImage, side: u32) -> GrayImage {
    if mask.dimensions() == (side, side) {
        return binarize(mask);
    }
    binarize(&image::imageops::resize(
        mask,
        side,
        side,
        FilterType::Nearest,
    ))
}

/// Maps every value ≥ 128 to 255 and the rest to 0.
pub fn binarize(mask: &GrayImage) -> GrayImage {
    let mut out = mask.clone();
    binarize_in_place(&mut out);
    out
}

fn binarize_in_place(mask: &mut GrayImage) {
    for p in mask.pixels_mut() {
        p.0[0] = if p.0[0] >= 128 { 255 } else { 0 };
    }
}

/// Reads only the header of an image file and returns its `(width, height)`.
pub fn image_size(path: impl AsRef<Path>) -> Result<(u32, u32)> {
    let path = path.as_ref();
    let reader = ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    reader.into_dimensions().map_err(|source| Error::Image {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes an image atomically ([`crate::atomic_file`]).
/// The format follows the extension of `path`.
pub fn save_atomic<P, C>(img: &image::ImageBuffer<P, C>, path: impl AsRef<Path>) -> Result<()>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
    C: std::ops::Deref<Target = [P::Subpixel]>,
{
    let path = path.as_ref();
    let format = image::ImageFormat::from_path(path).map_err(|source| Error::Image {
        path: path.to_path_buf(),
        source,
    })?;
    crate::atomic_file::write_atomic_with(path, |f| {
        let mut w = std::io::BufWriter::new(f);
        img.write_to(&mut w, format)
            .map_err(|source| Error::Image {
                path: path.to_path_buf(),
                source,
            })?;
        std::io::Write::flush(&mut w).map_err(|e| Error::io(path, e))
    })
}

pub(crate) fn check_side(side: u32) -> Result<()> {
    if side < 8 {
        return Err(Error::invalid_param(
            "side",
            format!("image side must be at least 8 pixels, got {side}"),
        ));
    }
    Ok(())
}
