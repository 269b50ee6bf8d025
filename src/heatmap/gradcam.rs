//! GradCAM (Selvaraju et al., ICCV 2017) of the detector's image-level **Gaussian anomaly score**:
//! the cheap localization alternative of CutPaste §4.2 (88.3 pixel AUROC on MVTec AD in the
//! paper; PAPER.md "Localization").
//!
//! For the `layer4` activations A (`[512, h, w]`, stride 32) of an image:
//! `s = (f̂ − μ)ᵀ Σ⁻¹ (f̂ − μ)` with `f̂ = f / ‖f‖`, `f = mean_{ij} A_{:,ij}` (exactly what the fitted
//! Gaussian scores, §3.3 Eq. 2), weights `α_k = mean_{ij} ∂s/∂A_{k,ij}`, and the map
//! `ReLU(Σ_k α_k A_k)`, upsampled bilinearly to the caller's image size.
//!
//! Because `f̂` ignores the scale of `f`, `s(λA) = s(A)` and `Σ A·∂s/∂A = 0`: the map before the
//! ReLU has zero mean over the grid, so GradCAM shows where it is above its own average.
use super::AnomalyMap;
use crate::data::{images_to_tensor, resize_rgb};
use crate::density::{FittedDensity, FittedGaussian};
use crate::detector::{Detector, SCORE_BATCH};
use crate::error::{Error, Result};
use image::RgbImage;
use ndarray::Array2;
use tch::{Device, Kind, Tensor};

/// A fitted Gaussian's squared Mahalanobis distance as a differentiable libtorch function (f64).
///
/// Scores the same as [`FittedGaussian::score_f64`] (same L2 normalisation, mean and Cholesky
/// factor; libtorch's triangular solve, so equal up to rounding), and gradients flow back to
/// the features.
#[derive(Debug)]
pub struct TorchGaussian {
    /// μ, `[d]` f64.
    mean: Tensor,
    /// Lower Cholesky factor L of Σ, `[d, d]` f64.
    chol: Tensor,
    l2_normalize: bool,
}

impl TorchGaussian {
    /// Copies μ and the Cholesky factor L of Σ of `gaussian` (factorised when it was fitted) to
    /// `device`.
    pub fn new(gaussian: &FittedGaussian, device: Device) -> Result<Self> {
        let d = gaussian.dim() as i64;
        let mean = Tensor::f_from_slice(&gaussian.mean().to_vec())?;
        // logical (row-major) order whatever the factor's memory layout, d·d
        let chol: Vec<f64> = gaussian.cholesky_factor().iter().copied().collect();
        let chol = Tensor::f_from_slice(&chol)?.f_reshape([d, d])?.f_tril(0)?;
        Ok(Self {
            mean: mean.f_to_device(device)?,
            chol: chol.f_to_device(device)?,
            l2_normalize: gaussian.params().l2_normalize,
        })
    }

    /// Feature dimension d.
    pub fn dim(&self) -> i64 {
        self.mean.size()[0]
    }

    /// Squared Mahalanobis distances `[N]` (f64, higher = more anomalous) of `features`
    /// `[N, d]` (any float kind, on the device of [`new`](Self::new)). Differentiable.
    ///
    /// Errors: not `[N, d]` → [`Error::DimensionMismatch`].
    pub fn score(&self, features: &Tensor) -> Result<Tensor> {
        let size = features.size();
        let d = self.dim();
        if size.len() != 2 || size[1] != d {
            return Err(Error::DimensionMismatch {
                what: format!("features to score (shape {size:?}, must be [N, {d}])"),
                expected: d as usize,
                got: size.last().copied().unwrap_or(0) as usize,
            });
        }
        let mut x = features.f_to_kind(Kind::Double)?; // [N, d]
        if self.l2_normalize {
            // ‖x‖ with the sum of squares clamped away from 0: zero rows stay 0 (as in the
            // density) and their gradient stays finite.
            let ss = x
                .f_square()?
                .f_sum_dim_intlist([1i64].as_slice(), true, None)? // [N, 1]
                .f_clamp_min(f64::MIN_POSITIVE)?;
            x = x.f_div(&ss.f_sqrt()?)?;
        }
        let centred = x.f_sub(&self.mean)?.f_tr()?; // [d, N]
        let z = self
            .chol
            .f_linalg_solve_triangular(&centred, false, true, false)?; // L z = (x − μ)ᵀ
        Ok(z.f_square()?
            .f_sum_dim_intlist([0i64].as_slice(), false, None)?) // [N]
    }
}

/// One image's GradCAM with the quantities it was computed from.
#[derive(Debug)]
pub struct GradCam {
    /// The image's anomaly score from the differentiable path (equals [`Detector::score`] up
    /// to rounding for an fp32 detector).
    pub score: f64,
    /// `layer4` activations A of the resized image, `[1, 512, h, w]` fp32 (`h = w = side/32`).
    pub activations: Tensor,
    /// ∂score/∂A, `[1, 512, h, w]` fp32.
    pub gradients: Tensor,
    /// `ReLU(Σ_k α_k A_k)` upsampled to the caller's image size (values ≥ 0).
    pub map: AnomalyMap,
}

impl Detector {
    /// GradCAM of the Gaussian anomaly score on `image` (any size; resized to the input side
    /// for the network), returned at the image's own size: higher = more anomalous, all ≥ 0.
    /// See the [module docs](crate::heatmap) and [`gradcam_explained`](Self::gradcam_explained).
    ///
    /// ```no_run
    /// # fn demo(detector: &cutpaste::Detector, image: &image::RgbImage) -> cutpaste::Result<()> {
    /// use cutpaste::heatmap::OverlayOptions;
    /// let map = detector.gradcam(image)?;
    /// map.save_overlay(image, &OverlayOptions::default(), "gradcam.png")?;
    /// # Ok(()) }
    /// ```
    pub fn gradcam(&self, image: &RgbImage) -> Result<AnomalyMap> {
        let mut maps = self.gradcam_batch(std::slice::from_ref(image))?;
        maps.pop()
            .ok_or_else(|| Error::internal("GradCAM produced no map"))
    }

    /// [`gradcam`](Self::gradcam) of several images (any sizes), batched by [`SCORE_BATCH`].
    pub fn gradcam_batch(&self, images: &[RgbImage]) -> Result<Vec<AnomalyMap>> {
        Ok(self
            .gradcam_explained(images)?
            .into_iter()
            .map(|g| g.map)
            .collect())
    }

    /// GradCAM with its score, activations and gradients, per image.
    ///
    /// Runs in fp32 with gradients enabled whatever the detector's fast path (bf16 autocast is
    /// not entered); no gradient reaches the network's variables (A is detached from them).
    ///
    /// Errors: a detector fitted with another density than the Gaussian →
    /// [`Error::Unsupported`]; an empty image → [`Error::InvalidInput`].
    pub fn gradcam_explained(&self, images: &[RgbImage]) -> Result<Vec<GradCam>> {
        let FittedDensity::Gaussian(gaussian) = self.density() else {
            return Err(Error::unsupported(
                "GradCAM of a detector fitted with a non-Gaussian density",
                "GradCAM differentiates the Gaussian's score; refit with Density::gaussian() \
                 or use the patch localizer",
            ));
        };
        if let Some(i) = images
            .iter()
            .position(|i| i.width() == 0 || i.height() == 0)
        {
            return Err(Error::invalid_input(
                "images",
                format!("image {i} is empty (0 pixels)"),
            ));
        }
        let gauss = TorchGaussian::new(gaussian, self.classifier().device())?;
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(SCORE_BATCH) {
            out.extend(self.gradcam_chunk(&gauss, chunk)?);
        }
        Ok(out)
    }

    fn gradcam_chunk(&self, gauss: &TorchGaussian, chunk: &[RgbImage]) -> Result<Vec<GradCam>> {
        let params = self.params_used();
        let side = params.input_size();
        let resized: Vec<RgbImage> = chunk.iter().map(|i| resize_rgb(i, side)).collect();
        let device = self.classifier().device();
        let x = images_to_tensor(&resized, &params.training.normalization, device)?;
        // fp32 forward without autograd through the network: A becomes a fresh leaf.
        let layer4 = tch::no_grad(|| self.classifier().backbone().forward_maps(&x, false))?.layer4;
        let a = layer4
            .f_to_kind(Kind::Float)?
            .f_contiguous()?
            .f_detach()?
            .f_set_requires_grad(true)?; // [n, 512, h, w]
        let (scores, grads) = tch::with_grad(|| -> Result<(Tensor, Tensor)> {
            // [n, 512, h, w] -> [n, 512, 1, 1] -> [n, 512], as ResNet18::forward_maps pools
            let pooled = a.f_adaptive_avg_pool2d([1, 1])?.f_flatten(1, -1)?;
            let scores = gauss.score(&pooled)?; // [n]
            let total = scores.f_sum(Kind::Double)?;
            let mut g = Tensor::f_run_backward(&[&total], &[&a], false, false)?;
            let g = g
                .pop()
                .ok_or_else(|| Error::internal("libtorch returned no gradient for layer4"))?;
            Ok((scores.f_detach()?, g))
        })?;
        let a = a.f_detach()?;
        // α: [n, 512, 1, 1]; cam: [n, 1, h, w]
        let alpha = grads.f_mean_dim([2i64, 3].as_slice(), true, None)?;
        let cam = alpha
            .f_mul(&a)?
            .f_sum_dim_intlist([1i64].as_slice(), true, None)?
            .f_relu()?;
        let scores: Vec<f64> = Vec::<f64>::try_from(scores.f_to_device(Device::Cpu)?)?;
        let mut out = Vec::with_capacity(chunk.len());
        for (i, image) in chunk.iter().enumerate() {
            let i = i as i64;
            let map = upsample_to(&cam.f_narrow(0, i, 1)?, image.width(), image.height())?;
            out.push(GradCam {
                score: scores[i as usize],
                activations: a.f_narrow(0, i, 1)?,
                gradients: grads.f_narrow(0, i, 1)?,
                map,
            });
        }
        Ok(out)
    }
}

/// `[1, 1, h, w]` → bilinear (`align_corners = false`) `[height, width]` map, by the crate's one
/// bilinear resize ([`AnomalyMap::resize`]) on the CPU copy of the small grid. The detector
/// stretches the whole image to its square input, so the grid maps linearly onto the image and
/// one interpolation straight to the image's size suffices. Its weights are ≥ 0, so the map
/// stays ≥ 0 like the ReLU'd grid.
fn upsample_to(cam: &Tensor, width: u32, height: u32) -> Result<AnomalyMap> {
    let (_, _, h, w) = cam.size4()?;
    let grid = cam
        .f_to_device(Device::Cpu)?
        .f_contiguous()?
        .f_flatten(0, -1)?; // [h·w]
    let values = Array2::from_shape_vec((h as usize, w as usize), Vec::<f32>::try_from(grid)?)
        .map_err(|e| Error::internal(format!("shape of the GradCAM grid: {e}")))?;
    AnomalyMap::new(values)?.resize(width, height)
}
