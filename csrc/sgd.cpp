// The optimizer's step and gradient release (src/model/optim.rs) over all parameters at once.
//
// Written as separate tensor operations, one SGD step with momentum and weight decay passes six
// times over every parameter-sized tensor and allocates three temporaries; on 64² crops that is
// a tenth of a training step. Here one pass per tensor, split across threads, does
//   d = g + round(wd * p);  b = round(round(momentum * b) + d);  p = round(p - round(lr * b))
// in fp32 with each product and sum rounded as the separate operations round them (no fused
// multiply-adds), so training gives bit for bit the parameters it gave before. It reads the
// three tensors by position, so it only takes parameters whose gradient and momentum buffer have
// the parameter's dense layout; any other parameter takes the same formula as separate ops.
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <vector>

#include "parallel.h"
#include "shim.h"

namespace {

// Whether the loop reads g and b as p is laid out: the same dense fp32 layout on the CPU.
bool same_layout(const at::Tensor& p, const at::Tensor& g, const at::Tensor& b) {
  return p.scalar_type() == at::kFloat && p.is_non_overlapping_and_dense() &&
         g.sizes() == p.sizes() && g.strides() == p.strides() && b.sizes() == p.sizes() &&
         b.strides() == p.strides() && g.scalar_type() == p.scalar_type() &&
         b.scalar_type() == p.scalar_type() && p.device().is_cpu() && g.device().is_cpu() &&
         b.device().is_cpu() && !g.is_sparse();
}

// The update over n values; no contraction into fused multiply-adds (see above).
__attribute__((optimize("fp-contract=off"))) CUTPASTE_CLONES void sgd_range(
    float* __restrict__ p, const float* __restrict__ g, float* __restrict__ b, int64_t n,
    float wd, float momentum, float lr) {
  for (int64_t i = 0; i < n; ++i) {
    const float d = g[i] + wd * p[i];
    const float m = momentum * b[i] + d;
    b[i] = m;
    p[i] = p[i] - lr * m;
  }
}

// A piece of one tensor's update: tensor index, first value, count.
struct Piece {
  size_t t;
  int64_t start, count;
};

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
      if (same_layout(p, g, b)) {
        ps.push_back(p);
        gs.push_back(g);
        bs.push_back(b);
        continue;
      }
      // the same operations as the loop's, rounded the same way
      auto d = g.add(p.mul(wd));
      b.mul_(momentum).add_(d);
      p.sub_(b.mul(lr));
    }
    if (ps.empty()) return;
    // pieces of at most 64K values, so that both threads get work however the sizes fall
    constexpr int64_t kPiece = 1 << 16;
    std::vector<Piece> pieces;
    for (size_t t = 0; t < ps.size(); ++t)
      for (int64_t s = 0; s < ps[t].numel(); s += kPiece)
        pieces.push_back({t, s, std::min(kPiece, ps[t].numel() - s)});
    const float fwd = static_cast<float>(wd), fmom = static_cast<float>(momentum),
                flr = static_cast<float>(lr);
    parallel_blocks(static_cast<int64_t>(pieces.size()), [&](int64_t i) {
      const Piece& q = pieces[i];
      sgd_range(ps[q.t].data_ptr<float>() + q.start, gs[q.t].data_ptr<float>() + q.start,
                bs[q.t].data_ptr<float>() + q.start, q.count, fwd, fmom, flr);
    });
    // Written through raw pointers: the variables must show as changed.
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
