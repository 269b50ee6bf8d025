//! Dense mid-level features ([`FeatureMode::Dense`](super::FeatureMode::Dense)): one partial
//! backbone pass per image gives a 384-d feature for every 8 × 8-pixel cell.
//!
//! `layer2` (stride 8, 128 channels) describes local texture; `layer3` (stride 16, 256
//! channels) adds context. Each map is averaged over its 3 × 3 neighbourhood (so a feature
//! summarises a slightly larger patch, as PaDiM/PatchCore do), `layer3` is bilinearly upsampled
//! onto the `layer2` grid, and the two are concatenated. PAPER.md Table 3 scores intermediate
//! levels of the same network; here they give a score map whose cells are 8 px apart on any
//! image size, at the cost of one forward pass up to `layer3`.
use super::params::DENSE_WIDTH;
use crate::data::{images_to_tensor, Normalization};
use crate::error::{Error, Result};
use crate::model::Classifier;
use image::RgbImage;
use ndarray::Array2;
use tch::Tensor;

/// Pixels per dense cell (the `layer2` stride).
pub const DENSE_STRIDE: u32 = 8;

/// `(rows, columns)` of the dense grid of a `w × h` image: `⌈h/8⌉ × ⌈w/8⌉`.
pub fn dense_grid(w: u32, h: u32) -> (usize, usize) {
    (
        h.div_ceil(DENSE_STRIDE) as usize,
        w.div_ceil(DENSE_STRIDE) as usize,
    )
}

/// `[rows · cols, 384]` dense features of each image (rows in grid row-major order: row
/// `i · cols + j` is the cell whose top-left pixel is `(8j, 8i)`). Images of one size go through
/// the backbone together, `batch` at a time.
pub fn dense_features(
    classifier: &Classifier,
    norm: &Normalization,
    images: &[RgbImage],
    batch: usize,
) -> Result<Vec<Array2<f32>>> {
    let mut out = Vec::with_capacity(images.len());
    let mut start = 0;
    while start < images.len() {
        let dims = images[start].dimensions();
        let mut end = start + 1;
        while end < images.len() && end - start < batch.max(1) && images[end].dimensions() == dims {
            end += 1;
        }
        let x = images_to_tensor(&images[start..end], norm, classifier.device())?;
        let f = dense_tensor(classifier, &x)?;
        out.extend(split_rows(&f)?);
        start = end;
    }
    Ok(out)
}

/// `[N, 3, H, W]` → `[N, ⌈H/8⌉·⌈W/8⌉, 384]` (CPU, fp32, contiguous).
fn dense_tensor(clf: &Classifier, x: &Tensor) -> Result<Tensor> {
    let (l2, l3) = clf.mid_maps(x)?;
    let pool = |t: &Tensor| t.f_avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None::<i64>);
    let l2 = pool(&l2)?; // [N, 128, h, w]
    let (h, w) = (l2.size()[2], l2.size()[3]);
    // [N, 256, h/2, w/2] -> [N, 256, h, w]
    let l3 = pool(&l3)?.f_upsample_bilinear2d([h, w], false, None, None)?;
    let f = Tensor::f_cat(&[l2, l3], 1)?; // [N, 384, h, w]
    let n = f.size()[0];
    // [N, 384, h, w] -> [N, h, w, 384] -> [N, h·w, 384]
    Ok(f.f_permute([0, 2, 3, 1])?
        .f_reshape([n, h * w, DENSE_WIDTH as i64])?
        .f_to_device(tch::Device::Cpu)?
        .f_contiguous()?)
}

/// `[N, cells, C]` → N arrays `[cells, C]`.
fn split_rows(f: &Tensor) -> Result<Vec<Array2<f32>>> {
    let size = f.size();
    let (n, cells, c) = (size[0] as usize, size[1] as usize, size[2] as usize);
    let mut flat = vec![0f32; n * cells * c];
    f.f_copy_data(&mut flat, n * cells * c)?;
    flat.chunks_exact(cells * c)
        .map(|chunk| {
            // [cells · C] -> [cells, C]
            Array2::from_shape_vec((cells, c), chunk.to_vec())
                .map_err(|e| Error::internal(format!("shape of `features`: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_rounds_up() {
        assert_eq!(dense_grid(256, 256), (32, 32));
        assert_eq!(dense_grid(512, 208), (26, 64));
        assert_eq!(dense_grid(33, 9), (2, 5));
    }
}
