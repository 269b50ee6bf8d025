//! The paper's optimizer (PAPER.md, "Training"; Appendix A.1): SGD with momentum 0.9 and weight
//! decay 3e-5, learning rate 0.03 decayed to 0 by one cycle of cosine, no warm-up.
//!
//! Written out (PyTorch `torch.optim.SGD` semantics, dampening 0, no Nesterov) so that the
//! momentum buffers can be checkpointed:
//! `d = g + wd·θ;  b ← μ·b + d;  θ ← θ − lr·b` (with `b = 0` before the first step).
//! Weight decay applies to every trainable parameter, BatchNorm weights and biases included, as
//! when all of a model's parameters are handed to `torch.optim.SGD` **[our choice]**; BatchNorm
//! running statistics are not parameters.
use crate::error::Result;
use std::collections::BTreeMap;
use tch::Tensor;

/// Cosine-annealed learning rate at `step` (0-based) of `total`:
/// `lr(t) = base · (1 + cos(π·t/total)) / 2`, so `lr(0) = base` and it reaches 0 at `t = total`
/// (PyTorch's `CosineAnnealingLR(T_max=total, eta_min=0)`).
pub fn cosine_lr(base: f64, step: usize, total: usize) -> f64 {
    if total == 0 {
        return 0.0;
    }
    cosine_at(base, step.min(total) as f64 / total as f64)
}

/// The cosine cycle's learning rate at `progress` ∈ [0, 1]: `base · (1 + cos(π·progress)) / 2`.
pub(crate) fn cosine_at(base: f64, progress: f64) -> f64 {
    0.5 * base * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// SGD with momentum and L2 weight decay over named parameters.
#[derive(Debug)]
pub(crate) struct Sgd {
    params: BTreeMap<String, Tensor>,
    /// Momentum buffers, same names and shapes as `params`.
    pub(crate) momentum_buffers: BTreeMap<String, Tensor>,
    momentum: f64,
    weight_decay: f64,
}

impl Sgd {
    pub(crate) fn new(
        params: BTreeMap<String, Tensor>,
        momentum: f64,
        weight_decay: f64,
    ) -> Result<Self> {
        let mut momentum_buffers = BTreeMap::new();
        for (name, p) in &params {
            // Same layout as the parameter (channels-last stays channels-last).
            momentum_buffers.insert(name.clone(), tch::no_grad(|| p.f_zeros_like())?);
        }
        Ok(Self {
            params,
            momentum_buffers,
            momentum,
            weight_decay,
        })
    }

    /// Sets every parameter's gradient to zero.
    pub(crate) fn zero_grad(&self) -> Result<()> {
        for p in self.params.values() {
            let mut g = p.f_grad()?;
            if g.defined() {
                let _ = g.f_detach_()?.f_zero_()?;
            }
        }
        Ok(())
    }

    /// One update with learning rate `lr`; parameters without a gradient are left alone.
    pub(crate) fn step(&mut self, lr: f64) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for (name, p) in &self.params {
                let g = p.f_grad()?;
                if !g.defined() {
                    continue;
                }
                let Some(buf) = self.momentum_buffers.get_mut(name) else {
                    continue;
                };
                // d = g + wd·θ ; b = μ·b + d ; θ -= lr·b
                let d = g.f_add(&p.f_mul_scalar(self.weight_decay)?)?;
                let _ = buf.f_mul_scalar_(self.momentum)?.f_add_(&d)?;
                let mut p = p.shallow_clone();
                let _ = p.f_sub_(&buf.f_mul_scalar(lr)?)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn cosine_schedule_by_hand() {
        assert_eq!(cosine_lr(0.03, 0, 100), 0.03);
        assert!((cosine_lr(0.03, 50, 100) - 0.015).abs() < 1e-15);
        // cos(π/4) = √2/2: lr = 0.03·(1+0.70710678)/2 = 0.025606601717798
        assert!((cosine_lr(0.03, 25, 100) - 0.025_606_601_717_798).abs() < 1e-12);
        assert!(cosine_lr(0.03, 100, 100).abs() < 1e-18);
        assert_eq!(cosine_lr(0.03, 0, 0), 0.0);
    }

    #[test]
    fn sgd_matches_the_update_rule_by_hand() {
        // θ0 = 1, loss = 2θ (g = 2), μ = 0.9, wd = 0.1, lr = 0.5:
        // d1 = 2.1,     b1 = 2.1,                 θ1 = 1 − 1.05 = −0.05
        // d2 = 1.995,   b2 = 1.89 + 1.995 = 3.885, θ2 = −0.05 − 1.9425 = −1.9925
        // d3 = 1.80075, b3 = 3.4965 + 1.80075,    θ3 = −1.9925 − 2.648625 = −4.641125
        let p = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let mut params = BTreeMap::new();
        params.insert("p".to_string(), p.shallow_clone());
        let mut sgd = Sgd::new(params, 0.9, 0.1).unwrap();
        for expect in [-0.05, -1.9925, -4.641125] {
            sgd.zero_grad().unwrap();
            (&p * 2.0).sum(Kind::Float).backward();
            sgd.step(0.5).unwrap();
            let got = p.double_value(&[0]);
            assert!((got - expect).abs() < 1e-5, "{got} vs {expect}");
        }
        assert!((sgd.momentum_buffers["p"].double_value(&[0]) - 5.29725).abs() < 1e-5);
    }
}
