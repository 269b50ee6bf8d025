// The optimizer's step and gradient release (src/model/optim.rs) over all parameters at once.
//
// Written as separate tensor operations, one SGD step with momentum and weight decay passes six
// times over every parameter-sized tensor and allocates three temporaries; on 64² crops that is
// a tenth of a training step. libtorch's fused kernel (at::_fused_sgd_, torch.optim.SGD's
// `fused=True`) does d = g + wd * p, b = momentum * b + d, p -= lr * b in one pass. It reads the
// three tensors by position, so it only gets parameters whose gradient and momentum buffer have
// the parameter's memory layout; any other parameter takes the same formula as separate ops.
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <vector>

#include "shim.h"

namespace {

// Whether the fused kernel reads g and b as p is laid out: the same dense layout.
bool same_layout(const at::Tensor& p, const at::Tensor& g, const at::Tensor& b) {
  return p.is_non_overlapping_and_dense() && g.sizes() == p.sizes() &&
         g.strides() == p.strides() && b.sizes() == p.sizes() && b.strides() == p.strides() &&
         g.scalar_type() == p.scalar_type() && b.scalar_type() == p.scalar_type() &&
         p.device().is_cpu() && g.device().is_cpu() && b.device().is_cpu() && !g.is_sparse();
}

}  // namespace

extern "C" {

const char* cutpaste_sgd_last_error() { return last_error.c_str(); }

// One step over the n parameters params[i] (fp32 leaves with a gradient) and their momentum
// buffers bufs[i]: d = g + wd * p; b = momentum * b + d; p -= lr * b. 0 on success, 1 on failure
// (message: cutpaste_sgd_last_error).
int cutpaste_sgd_step(at::Tensor* const* params, at::Tensor* const* bufs, int64_t n, double wd,
                      double momentum, double lr) {
  return guarded([&] {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> ps, gs, bs;
    for (int64_t i = 0; i < n; ++i) {
      at::Tensor& p = *params[i];
      at::Tensor& b = *bufs[i];
      const at::Tensor g = p.grad();
      if (!g.defined()) continue;
      if (momentum != 0.0 && p.scalar_type() == at::kFloat && same_layout(p, g, b)) {
        ps.push_back(p);
        gs.push_back(g);
        bs.push_back(b);
        continue;
      }
      auto d = g.add(p, wd);
      b.mul_(momentum).add_(d);
      p.sub_(b, lr);
    }
    if (ps.empty()) return;
    // dampening 0, no Nesterov, minimising; b starts at 0, so not the first-step variant
    at::_fused_sgd_(ps, gs, bs, wd, momentum, lr, 0.0, false, false, false);
    // The kernel writes in place without a version bump; changed variables must show as changed.
    for (auto& t : ps) t.unsafeGetTensorImpl()->bump_version();
    for (auto& t : bs) t.unsafeGetTensorImpl()->bump_version();
  });
}

// Releases the gradient of each of the n tensors (as torch.optim's zero_grad(set_to_none=True)):
// the next backward then stores its gradient instead of adding it to zeros.
int cutpaste_release_grads(at::Tensor* const* params, int64_t n) {
  return guarded([&] {
    for (int64_t i = 0; i < n; ++i) params[i]->mutable_grad().reset();
  });
}

}  // extern "C"
