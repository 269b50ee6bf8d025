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
use std::os::raw::{c_char, c_int};
use tch::Tensor;
use torch_sys::C_tensor;

extern "C" {
    fn cutpaste_sgd_last_error() -> *const c_char;
    fn cutpaste_sgd_step(
        params: *const *mut C_tensor,
        bufs: *const *mut C_tensor,
        n: i64,
        weight_decay: f64,
        momentum: f64,
        lr: f64,
    ) -> c_int;
    fn cutpaste_release_grads(params: *const *mut C_tensor, n: i64) -> c_int;
}

/// The shim's result as ours (see `csrc/sgd.cpp`).
fn sgd_result(code: c_int, what: &str) -> Result<()> {
    match code {
        0 => Ok(()),
        _ => Err(super::fused_train::shim_error(
            cutpaste_sgd_last_error,
            what,
        )),
    }
}

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

    /// Releases every parameter's gradient (PyTorch's `zero_grad(set_to_none=True)`): the next
    /// backward stores its gradients instead of adding them to zeros.
    pub(crate) fn zero_grad(&self) -> Result<()> {
        let ptrs: Vec<*mut C_tensor> = self.params.values().map(|p| p.as_ptr() as *mut _).collect();
        // SAFETY: every pointer is a live tch tensor held by `self.params`.
        let code = unsafe { cutpaste_release_grads(ptrs.as_ptr(), ptrs.len() as i64) };
        sgd_result(code, "releasing the gradients")
    }

    /// One update with learning rate `lr`; parameters without a gradient are left alone. All
    /// parameters in one call (`csrc/sgd.cpp`: one pass per tensor, split across threads,
    /// rounded as the separate tensor operations round: the same values as those).
    pub(crate) fn step(&mut self, lr: f64) -> Result<()> {
        let mut params = Vec::with_capacity(self.params.len());
        let mut bufs = Vec::with_capacity(self.params.len());
        for (name, p) in &self.params {
            if let Some(buf) = self.momentum_buffers.get(name) {
                params.push(p.as_ptr() as *mut C_tensor);
                bufs.push(buf.as_ptr() as *mut C_tensor);
            }
        }
        // SAFETY: every pointer is a live tch tensor held by `self`; the shim updates them in
        // place and keeps none.
        let code = unsafe {
            cutpaste_sgd_step(
                params.as_ptr(),
                bufs.as_ptr(),
                params.len() as i64,
                self.weight_decay,
                self.momentum,
                lr,
            )
        };
        sgd_result(code, "optimizer step")
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

    /// Three steps over two channels-last convolution weights (the second with its momentum
    /// buffer in the other layout), a vector and a matrix, against the update rule written out
    /// with tensor operations: the same values, bit for bit.
    #[test]
    fn fused_step_matches_the_update_rule_for_every_layout() {
        let (mu, wd) = (0.9, 3e-5);
        let shapes: [&[i64]; 4] = [&[8, 4, 3, 3], &[8, 4, 3, 3], &[5], &[3, 7]];
        let mut init = crate::model::layers::Init::new(11);
        let mut params = BTreeMap::new();
        let mut reference = Vec::new();
        for (i, dims) in shapes.iter().enumerate() {
            let n = dims.iter().product::<i64>() as usize;
            let mut t = Tensor::from_slice(&init.normal(n, 1.0)).reshape(*dims);
            if dims.len() == 4 {
                t = crate::model::layers::channels_last(&t).unwrap();
            }
            params.insert(format!("p{i}"), t.detach().set_requires_grad(true));
            reference.push((t.detach().copy(), t.zeros_like()));
        }
        let shared = params
            .iter()
            .map(|(k, p)| (k.clone(), p.shallow_clone()))
            .collect();
        let mut sgd = Sgd::new(shared, mu, wd).unwrap();
        // the second weight's momentum buffer contiguous (NCHW), unlike the weight (as a buffer
        // read from elsewhere could be): the shim's per-tensor path
        let b1 = sgd.momentum_buffers["p1"].contiguous();
        sgd.momentum_buffers.insert("p1".into(), b1);
        for step in 0..3 {
            let lr = 0.1 / (step + 1) as f64;
            sgd.zero_grad().unwrap();
            let mut grads = Vec::new();
            for p in params.values() {
                assert!(!p.grad().defined(), "zero_grad releases the gradients");
                let n = p.numel();
                let w = Tensor::from_slice(&init.normal(n, 1.0)).reshape(p.size());
                (p * &w).sum(Kind::Float).backward();
                grads.push(w);
            }
            let version = |p: &Tensor| p.f_internal_version().unwrap();
            let versions: Vec<i64> = params.values().map(version).collect();
            sgd.step(lr).unwrap();
            for (p, v) in params.values().zip(versions) {
                assert!(version(p) > v, "a step shows as a change of the variables");
            }
            for ((p, b), g) in reference.iter_mut().zip(&grads) {
                let d = g + &*p * wd;
                *b = &*b * mu + d;
                *p = &*p - &*b * lr;
            }
        }
        // each product and sum rounded as the separate operations round them: bit for bit
        for ((name, p), (r, b)) in params.iter().zip(&reference) {
            assert!(p.equal(r), "{name}: parameter differs");
            assert!(
                sgd.momentum_buffers[name].equal(b),
                "{name}: momentum buffer differs"
            );
        }
    }
}
