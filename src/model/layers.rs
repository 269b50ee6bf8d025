//! The three layer kinds ResNet-18 and the MLP head are made of, with fallible forwards and a
//! seeded initialisation that does not touch libtorch's global random generator (so models built
//! concurrently, e.g. by parallel tests, are still reproducible).
use crate::error::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{nn, Kind, Tensor};

/// Seeded initialiser: draws every initial weight from one ChaCha8 stream. Also the crate's one
/// Gaussian sampler outside the networks (t-SNE's random start), so that Box–Muller exists once;
/// its stream fixes every initial weight, hence every trained model, of a seed: do not change it.
pub(crate) struct Init {
    /// `None`: every value is 0 ([`Init::zeros`]).
    rng: Option<ChaCha8Rng>,
}

impl Init {
    /// The stream of `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            rng: Some(ChaCha8Rng::seed_from_u64(seed)),
        }
    }

    /// Zeros instead of random draws, for networks whose variables are all overwritten next
    /// (checkpoint loads and copies): drawing 11 M Gaussian weights costs more than the load.
    pub(crate) fn zeros() -> Self {
        Self { rng: None }
    }

    /// `n` uniform samples in [0, 1) with 24 random bits each, drawn in one bulk call.
    fn unit(&mut self, n: usize) -> Vec<f32> {
        let mut bits = vec![0u32; n];
        if let Some(rng) = self.rng.as_mut() {
            rng.fill(&mut bits[..]);
        }
        bits.into_iter()
            .map(|b| (b >> 8) as f32 * (1.0 / (1u32 << 24) as f32))
            .collect()
    }

    /// `n` samples of N(0, std²) (Box–Muller on pairs of [`Self::unit`] draws).
    pub(crate) fn normal(&mut self, n: usize, std: f64) -> Vec<f32> {
        if self.rng.is_none() {
            return vec![0.0; n];
        }
        let u = self.unit(n + n % 2);
        let std = std as f32;
        let mut out = Vec::with_capacity(n + 1);
        for pair in u.chunks_exact(2) {
            let r = (-2.0 * (1.0 - pair[0]).ln()).sqrt() * std; // 1 − u ∈ (0, 1]
            let (s, c) = (std::f32::consts::TAU * pair[1]).sin_cos();
            out.push(r * c);
            out.push(r * s);
        }
        out.truncate(n);
        out
    }

    /// `n` samples of U(-bound, bound).
    fn uniform(&mut self, n: usize, bound: f64) -> Vec<f32> {
        if self.rng.is_none() {
            return vec![0.0; n];
        }
        let bound = bound as f32;
        self.unit(n)
            .into_iter()
            .map(|u| (u * 2.0 - 1.0) * bound)
            .collect()
    }
}

/// Registers a trainable variable `name` under `p` holding `values` reshaped to `dims`.
fn var(p: &nn::Path, name: &str, dims: &[i64], values: &[f32]) -> Result<Tensor> {
    let t = Tensor::f_from_slice(values)?.f_reshape(dims)?;
    Ok(p.f_var_copy(name, &t)?)
}

/// 2-D convolution without bias (torchvision ResNet convention), square kernel.
#[derive(Debug)]
pub(crate) struct Conv2d {
    pub(crate) weight: Tensor,
    stride: i64,
    padding: i64,
}

impl Conv2d {
    /// Kaiming-normal init with fan-out and ReLU gain, as torchvision's ResNet:
    /// std = sqrt(2 / (c_out · k · k)).
    pub(crate) fn new(
        p: &nn::Path,
        init: &mut Init,
        (c_in, c_out, k): (i64, i64, i64),
        stride: i64,
        padding: i64,
    ) -> Result<Self> {
        let dims = [c_out, c_in, k, k];
        let std = (2.0 / (c_out * k * k) as f64).sqrt();
        let values = init.normal(dims.iter().product::<i64>() as usize, std);
        Ok(Self {
            weight: var(p, "weight", &dims, &values)?,
            stride,
            padding,
        })
    }

    /// `(stride, padding)`, the same along both axes.
    pub(crate) fn geometry(&self) -> (i64, i64) {
        (self.stride, self.padding)
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (s, p) = (self.stride, self.padding);
        Ok(x.f_conv2d(&self.weight, None::<Tensor>, [s, s], [p, p], [1, 1], 1)?)
    }
}

/// BatchNorm's ε (PyTorch's default).
const EPS: f64 = 1e-5;

/// Batch normalisation (PyTorch defaults: eps 1e-5, momentum 0.1) over dim 1 of `[N, C, …]`.
#[derive(Debug)]
pub(crate) struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
}

impl BatchNorm {
    /// PyTorch's default momentum of the running statistics.
    pub(crate) const MOMENTUM: f64 = 0.1;
    /// PyTorch's default ε.
    pub(crate) const EPS: f64 = EPS;

    /// weight = 1, bias = 0, running statistics (0, 1): PyTorch's initialisation.
    pub(crate) fn new(p: &nn::Path, channels: i64) -> Result<Self> {
        Ok(Self {
            weight: p.f_ones("weight", &[channels])?,
            bias: p.f_zeros("bias", &[channels])?,
            running_mean: p.f_zeros_no_train("running_mean", &[channels])?,
            running_var: p.f_ones_no_train("running_var", &[channels])?,
        })
    }

    /// Its four variables: weight γ, bias β, running mean μ and running variance σ².
    pub(crate) fn variables(&self) -> [&Tensor; 4] {
        [
            &self.weight,
            &self.bias,
            &self.running_mean,
            &self.running_var,
        ]
    }

    /// Evaluation mode as a per-channel affine map `y = x·s + t` (fp32, `[C]` each):
    /// `s = γ / √(σ² + ε)`, `t = β − μ·s`.
    pub(crate) fn eval_affine(&self) -> Result<(Tensor, Tensor)> {
        let f = |t: &Tensor| t.f_to_kind(Kind::Float);
        let scale = f(&self.weight)?.f_div(&f(&self.running_var)?.f_add_scalar(EPS)?.f_sqrt()?)?;
        let shift = f(&self.bias)?.f_sub(&f(&self.running_mean)?.f_mul(&scale)?)?;
        Ok((scale, shift))
    }

    /// `train`: normalise with batch statistics and update the running ones; otherwise use the
    /// running statistics.
    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(x.f_batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            Self::MOMENTUM,
            EPS,
            true,
        )?)
    }
}

/// Fully connected layer `y = x Wᵀ + b` with PyTorch's default init U(±1/√fan_in).
#[derive(Debug)]
pub(crate) struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub(crate) fn new(
        p: &nn::Path,
        init: &mut Init,
        (d_in, d_out): (i64, i64),
        bias: bool,
    ) -> Result<Self> {
        let bound = 1.0 / (d_in as f64).sqrt();
        let w = init.uniform((d_in * d_out) as usize, bound);
        let weight = var(p, "weight", &[d_out, d_in], &w)?;
        let bias = if bias {
            Some(var(
                p,
                "bias",
                &[d_out],
                &init.uniform(d_out as usize, bound),
            )?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_linear(&self.weight, self.bias.as_ref())?)
    }
}

/// Returns `t` (NCHW) with channels-last strides (NHWC in memory), the layout oneDNN and cuDNN
/// convolutions prefer. Shape and values are unchanged.
pub(crate) fn channels_last(t: &Tensor) -> Result<Tensor> {
    // [n, c, h, w] -> [n, h, w, c] (contiguous) -> viewed back as [n, c, h, w]
    Ok(t.f_permute([0, 2, 3, 1])?
        .f_contiguous()?
        .f_permute([0, 3, 1, 2])?)
}

/// True when `t` is 4-D and laid out channels-last.
#[cfg(test)]
pub(crate) fn is_channels_last(t: &Tensor) -> bool {
    let (size, stride) = (t.size(), t.stride());
    size.len() == 4 && stride[1] == 1 && (size[1] == 1 || stride[3] == size[1])
}

/// Mean of a 0-d or 1-element tensor as `f64`.
pub(crate) fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.f_to_kind(Kind::Double)?.f_double_value(&[])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_moments_match_the_requested_distributions() {
        let mut init = Init::new(7);
        let n = 200_000;
        let x = init.normal(n, 2.0);
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 4.0).abs() < 0.05, "var {var}");
        let u = init.uniform(n, 0.5);
        assert!(u.iter().all(|v| v.abs() <= 0.5));
        let var = u.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64;
        assert!((var - 0.25 / 3.0).abs() < 0.002, "uniform var {var}");
        // Same seed, same draws.
        assert_eq!(Init::new(3).normal(5, 1.0), Init::new(3).normal(5, 1.0));
    }

    #[test]
    fn channels_last_keeps_values_and_changes_strides() {
        let t =
            Tensor::arange(2 * 3 * 4 * 5, (Kind::Float, tch::Device::Cpu)).reshape([2, 3, 4, 5]);
        let cl = channels_last(&t).unwrap();
        assert!(is_channels_last(&cl) && !is_channels_last(&t));
        assert_eq!(cl.stride(), vec![60, 1, 15, 3]);
        assert!(cl.equal(&t));
    }
}
