// A residual block's BatchNorm + ReLU, and BatchNorm + residual sum + ReLU, as single autograd
// functions for the CPU in training mode (src/model/bn_act.rs). libtorch runs batch norm, the sum
// and the ReLU as separate kernels, each reading and writing the whole activation, and keeps the
// normalised tensor for the backward; here the forward reads the input twice (statistics, then
// normalise, add and ReLU in one pass) and the backward reads it twice (the gradient sums, then
// the input gradient, with the residual's gradient written in the same pass). A block's output,
// read by the next block's convolution and its shortcut, can be returned twice (see twin()):
// then the backward adds the two gradients itself, saving autograd's extra pass.
//
// The arithmetic is libtorch's (see csrc/stem.cpp): batch statistics normalise, the unbiased
// variance updates the running one, the normalised value and the sum are rounded to the input's
// precision as libtorch's separate kernels round them, and the backward is
//   dz = dy where the output is not 0 (else 0), the residual's gradient = dz,
//   dx = gamma * invstd * (dz - mean(dz) - xhat * mean(dz * xhat)),
//   dgamma = sum(dz * xhat), dbeta = sum(dz).
#include "bn_kernels.h"

namespace {

// ---- an output read by two consumers ----
//
// A block's output feeds the next block's first convolution and its shortcut (identity or
// 1x1 convolution). Used twice, autograd adds the two gradients in an extra pass over the
// activation (read, read, write) before the backward reads the sum. Asked for two outputs, a
// fused function returns its output twice (the second shares the first's memory: no copy) and
// its backward reads both gradients, adding them where it reads them, rounded as autograd's sum
// rounds them.

// A second tensor on t's memory: same values, not a view in autograd's sense.
at::Tensor twin(const at::Tensor& t) {
  return at::empty({0}, t.options()).set_(t.storage(), t.storage_offset(), t.sizes(), t.strides());
}

// The gradients of a function's outputs as (first, second): the defined ones, first first
// (second undefined when only one output is used), in the output's dtype (`opts`), channels-last;
// zeros of `sizes` if none is defined.
std::pair<at::Tensor, at::Tensor> output_grads(const torch::autograd::variable_list& grads,
                                               const at::TensorOptions& opts,
                                               at::IntArrayRef sizes) {
  const auto cl = at::MemoryFormat::ChannelsLast;
  std::vector<at::Tensor> defined;
  for (const auto& g : grads)
    if (g.defined()) defined.push_back(g.to(opts.dtype().toScalarType()).contiguous(cl));
  if (defined.empty()) defined.push_back(at::zeros(sizes, opts.memory_format(cl)));
  return {defined[0], defined.size() > 1 ? defined[1] : at::Tensor()};
}

// The gradient at i: g1's, or round(g1 + g2) when there are two (autograd's sum of both).
template <typename T, bool Two>
CP_INLINE float grad_at(const typename T::S* __restrict__ g1, const typename T::S* __restrict__ g2,
                        int64_t i) {
  if (Two) return T::load(T::store(T::load(g1[i]) + T::load(g2[i])));
  return T::load(g1[i]);
}

// y = relu(round(round(x*a + b) [+ r])) over a row of P pixels. Rounding is monotonic and keeps
// 0, so relu(round(z)) = round(relu(z)): the last rounding is the store's.
template <typename T, bool Res>
CP_INLINE void act_row(const typename T::S* __restrict__ x, const typename T::S* __restrict__ r,
                       int64_t P, int64_t C, const float* __restrict__ a,
                       const float* __restrict__ b, typename T::S* __restrict__ y) {
  for (int64_t p = 0; p < P; ++p)
    for (int64_t c = 0; c < C; ++c) {
      float z = T::load(x[p * C + c]) * a[c] + b[c];
      if (Res) z = T::load(T::store(z)) + T::load(r[p * C + c]);
      y[p * C + c] = T::store((z > 0.f || z != z) ? z : 0.f);
    }
}

// The row's sums of dz and dz * xhat, dz = dy where y is not 0 (dy: dy1 + dy2 when Two).
template <typename T, bool Two>
CP_INLINE void act_sums_row(const typename T::S* __restrict__ x,
                            const typename T::S* __restrict__ y,
                            const typename T::S* __restrict__ dy,
                            const typename T::S* __restrict__ dy2, int64_t P, int64_t C,
                            const float* __restrict__ mean, const float* __restrict__ invstd,
                            float* __restrict__ s1, float* __restrict__ s2) {
  for (int64_t p = 0; p < P; ++p)
    for (int64_t c = 0; c < C; ++c) {
      const float g = grad_at<T, Two>(dy, dy2, p * C + c);
      const float d = T::load(y[p * C + c]) <= 0.f ? 0.f : g;
      s1[c] += d;
      s2[c] += d * (T::load(x[p * C + c]) - mean[c]) * invstd[c];
    }
}

// dx = k1 * dz + k2 * x + k3; dr = dz when Res.
template <typename T, bool Res, bool Two>
CP_INLINE void act_grad_row(const typename T::S* __restrict__ x,
                            const typename T::S* __restrict__ y,
                            const typename T::S* __restrict__ dy,
                            const typename T::S* __restrict__ dy2, int64_t P, int64_t C,
                            const float* __restrict__ k1, const float* __restrict__ k2,
                            const float* __restrict__ k3, typename T::S* __restrict__ dx,
                            typename T::S* __restrict__ dr) {
  for (int64_t p = 0; p < P; ++p)
    for (int64_t c = 0; c < C; ++c) {
      const float g = grad_at<T, Two>(dy, dy2, p * C + c);
      const bool off = T::load(y[p * C + c]) <= 0.f;
      const float d = off ? 0.f : g;
      dx[p * C + c] = T::store(k1[c] * d + k2[c] * T::load(x[p * C + c]) + k3[c]);
      // d is 0 or a gradient value already in T: stored as it is, no rounding needed
      if (Res) dr[p * C + c] = off ? typename T::S(0) : Two ? T::exact(g) : dy[p * C + c];
    }
}

#define CUTPASTE_ACT(T)                                                                          \
  CUTPASTE_CLONES void act_row_##T(const T::S* x, const T::S* r, int64_t P, int64_t C,          \
                                   const float* a, const float* b, T::S* y) {                   \
    if (r)                                                                                       \
      act_row<T, true>(x, r, P, C, a, b, y);                                                     \
    else                                                                                         \
      act_row<T, false>(x, r, P, C, a, b, y);                                                    \
  }                                                                                              \
  CUTPASTE_CLONES void act_sums_row_##T(const T::S* x, const T::S* y, const T::S* dy,           \
                                        const T::S* dy2, int64_t P, int64_t C,                   \
                                        const float* mean, const float* invstd, float* s1,       \
                                        float* s2) {                                             \
    if (dy2)                                                                                     \
      act_sums_row<T, true>(x, y, dy, dy2, P, C, mean, invstd, s1, s2);                          \
    else                                                                                         \
      act_sums_row<T, false>(x, y, dy, dy2, P, C, mean, invstd, s1, s2);                         \
  }                                                                                              \
  CUTPASTE_CLONES void act_grad_row_##T(const T::S* x, const T::S* y, const T::S* dy,           \
                                        const T::S* dy2, int64_t P, int64_t C, const float* k1,  \
                                        const float* k2, const float* k3, T::S* dx, T::S* dr) {  \
    if (dr && dy2)                                                                               \
      act_grad_row<T, true, true>(x, y, dy, dy2, P, C, k1, k2, k3, dx, dr);                      \
    else if (dr)                                                                                 \
      act_grad_row<T, true, false>(x, y, dy, dy2, P, C, k1, k2, k3, dx, dr);                     \
    else if (dy2)                                                                                \
      act_grad_row<T, false, true>(x, y, dy, dy2, P, C, k1, k2, k3, dx, dr);                     \
    else                                                                                         \
      act_grad_row<T, false, false>(x, y, dy, dy2, P, C, k1, k2, k3, dx, dr);                    \
  }

CUTPASTE_ACT(F32)
CUTPASTE_ACT(Bf16)

template <typename T>
struct ActKern;
template <>
struct ActKern<F32> {
  static constexpr auto act = act_row_F32;
  static constexpr auto sums = act_sums_row_F32;
  static constexpr auto grad = act_grad_row_F32;
};
template <>
struct ActKern<Bf16> {
  static constexpr auto act = act_row_Bf16;
  static constexpr auto sums = act_sums_row_Bf16;
  static constexpr auto grad = act_grad_row_Bf16;
};

template <typename T>
const typename T::S* ptr(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<const typename T::S*>(t.data_ptr()) : nullptr;
}
template <typename T>
typename T::S* mut(at::Tensor& t) {
  return t.defined() ? reinterpret_cast<typename T::S*>(t.data_ptr()) : nullptr;
}

// y = relu(x*a + b [+ r]), rows of W pixels.
template <typename T>
void act_forward(const at::Tensor& x, const at::Tensor& r, const Shape& s, const float* a,
                 const float* b, at::Tensor& y) {
  const auto *xp = ptr<T>(x), *rp = ptr<T>(r);
  auto* yp = mut<T>(y);
  const int64_t rows = s.N * s.H, row = s.W * s.C, blocks = std::min(kBlocks * 4, rows);
  parallel_blocks(blocks, [&](int64_t blk) {
    auto [lo, hi] = block_rows(blk, rows, blocks);
    for (int64_t i = lo; i < hi; ++i)
      ActKern<T>::act(xp + i * row, rp ? rp + i * row : nullptr, s.W, s.C, a, b, yp + i * row);
  });
}

// dx (and dr when defined); s1 = sum(dz), s2 = sum(dz * xhat).
template <typename T>
void act_backward(const at::Tensor& x, const at::Tensor& y, const at::Tensor& dy,
                  const at::Tensor& dy2, const Shape& s, const float* mean, const float* invstd,
                  const float* gamma, at::Tensor& dx, at::Tensor& dr, std::vector<double>& s1,
                  std::vector<double>& s2) {
  const auto *xp = ptr<T>(x), *yp = ptr<T>(y), *gp = ptr<T>(dy), *gp2 = ptr<T>(dy2);
  const int64_t C = s.C, rows = s.N * s.H, row = s.W * C, blocks = std::min(kBlocks, rows);
  std::vector<double> p1(blocks * C, 0.0), p2(blocks * C, 0.0);
  parallel_blocks(blocks, [&](int64_t blk) {
    std::vector<float> r1(C), r2(C);
    auto [lo, hi] = block_rows(blk, rows, blocks);
    for (int64_t i = lo; i < hi; ++i) {
      std::fill(r1.begin(), r1.end(), 0.f);
      std::fill(r2.begin(), r2.end(), 0.f);
      ActKern<T>::sums(xp + i * row, yp + i * row, gp + i * row, gp2 ? gp2 + i * row : nullptr,
                       s.W, C, mean, invstd, r1.data(), r2.data());
      for (int64_t c = 0; c < C; ++c) p1[blk * C + c] += r1[c], p2[blk * C + c] += r2[c];
    }
  });
  std::vector<float> k1, k2, k3;
  input_grad_coefficients(s, p1, p2, blocks, gamma, mean, invstd, s1, s2, k1, k2, k3);
  auto* dxp = mut<T>(dx);
  auto* drp = mut<T>(dr);
  const int64_t blocks2 = std::min(kBlocks * 4, rows);
  parallel_blocks(blocks2, [&](int64_t blk) {
    auto [lo, hi] = block_rows(blk, rows, blocks2);
    for (int64_t i = lo; i < hi; ++i)
      ActKern<T>::grad(xp + i * row, yp + i * row, gp + i * row, gp2 ? gp2 + i * row : nullptr,
                       s.W, C, k1.data(), k2.data(), k3.data(), dxp + i * row,
                       drp ? drp + i * row : nullptr);
  });
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The forward of both functions below; `residual` is undefined for BatchNorm + ReLU.
at::Tensor bn_act_forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& gamma,
                          const at::Tensor& beta, at::Tensor running_mean, at::Tensor running_var,
                          const at::Tensor& residual, double momentum, double eps) {
  const Shape s = shape_of(x);
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  std::vector<double> mean, var;
  batch_stats_of(x, s, mean, var);
  std::vector<double> invstd, a, b;
  affine_and_running(s, mean, var, gamma, beta, running_mean, running_var, momentum, eps, invstd,
                     a, b);
  auto a_t = f32(a), b_t = f32(b);
  auto y = at::empty_like(x, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (bf16)
    act_forward<Bf16>(x, residual, s, a_t.data_ptr<float>(), b_t.data_ptr<float>(), y);
  else
    act_forward<F32>(x, residual, s, a_t.data_ptr<float>(), b_t.data_ptr<float>(), y);
  ctx->save_for_backward({x, gamma, f32(mean), f32(invstd), y});
  return y;
}

// The backward of both: {dx, dgamma, dbeta, dresidual (undefined without a residual)}.
variable_list bn_act_backward(AutogradContext* ctx, const variable_list& grads, bool res) {
  auto sv = ctx->get_saved_variables();
  const auto &x = sv[0], &gamma = sv[1], &mean = sv[2], &invstd = sv[3], &y = sv[4];
  const Shape s = shape_of(x);
  auto cl = at::MemoryFormat::ChannelsLast;
  const auto [dy, dy2] = output_grads(grads, x.options(), x.sizes());
  auto dx = at::empty_like(x, x.options().memory_format(cl));
  at::Tensor dr = res ? at::empty_like(x, x.options().memory_format(cl)) : at::Tensor();
  auto gf = gamma.to(at::kFloat).contiguous();
  std::vector<double> s1, s2;
  const float *mp = mean.data_ptr<float>(), *ip = invstd.data_ptr<float>();
  if (x.scalar_type() == at::kBFloat16)
    act_backward<Bf16>(x, y, dy, dy2, s, mp, ip, gf.data_ptr<float>(), dx, dr, s1, s2);
  else
    act_backward<F32>(x, y, dy, dy2, s, mp, ip, gf.data_ptr<float>(), dx, dr, s1, s2);
  return {dx, f32(s2), f32(s1), dr};
}

// The function's output, twice when `outputs` is 2 (see twin()).
variable_list outputs_of(AutogradContext* ctx, const at::Tensor& y, int64_t outputs) {
  ctx->set_materialize_grads(false);
  if (outputs == 2) return {y, twin(y)};
  return {y};
}

// relu(batch_norm(x)) (autograd does not take undefined tensors as inputs, hence two functions)
struct BnRelu : public torch::autograd::Function<BnRelu> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& gamma,
                               const at::Tensor& beta, at::Tensor running_mean,
                               at::Tensor running_var, double momentum, double eps,
                               int64_t outputs) {
    auto y = bn_act_forward(ctx, x, gamma, beta, running_mean, running_var, at::Tensor(),
                            momentum, eps);
    return outputs_of(ctx, y, outputs);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto g = bn_act_backward(ctx, grads, false);
    return {g[0], g[1], g[2], at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

// relu(batch_norm(x) + residual)
struct BnAddRelu : public torch::autograd::Function<BnAddRelu> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& gamma,
                               const at::Tensor& beta, at::Tensor running_mean,
                               at::Tensor running_var, const at::Tensor& residual,
                               double momentum, double eps, int64_t outputs) {
    auto y = bn_act_forward(ctx, x, gamma, beta, running_mean, running_var, residual, momentum,
                            eps);
    return outputs_of(ctx, y, outputs);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto g = bn_act_backward(ctx, grads, true);
    return {g[0],         g[1],         g[2], at::Tensor(), at::Tensor(),
            g[3],         at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

const char* cutpaste_bn_act_last_error() { return last_error.c_str(); }

// *out = relu(batch_norm(x) [+ residual]) in training mode (residual may be null), the running
// statistics updated in place; with out2 not null, *out2 = the same output again for a second
// consumer (see twin() above). 0 on success, 1 on failure (message:
// cutpaste_bn_act_last_error), 2 when the input is not one this kernel takes (then nothing was
// changed).
int cutpaste_bn_act_train(const at::Tensor* x, const at::Tensor* gamma, const at::Tensor* beta,
                          const at::Tensor* running_mean, const at::Tensor* running_var,
                          const at::Tensor* residual, double momentum, double eps,
                          at::Tensor** out, at::Tensor** out2) {
  const at::Tensor& t = *x;
  if (!input_ok(t, *gamma, *beta, *running_mean, *running_var)) return 2;
  if (residual && !(residual->scalar_type() == t.scalar_type() && residual->sizes() == t.sizes() &&
                    residual->device().is_cpu() &&
                    residual->is_contiguous(at::MemoryFormat::ChannelsLast)))
    return 2;
  const int64_t outputs = out2 ? 2 : 1;
  return guarded([&] {
    auto y = residual ? BnAddRelu::apply(t, *gamma, *beta, *running_mean, *running_var,
                                         *residual, momentum, eps, outputs)
                      : BnRelu::apply(t, *gamma, *beta, *running_mean, *running_var, momentum,
                                      eps, outputs);
    *out = new at::Tensor(std::move(y[0]));
    if (out2) *out2 = new at::Tensor(std::move(y[1]));
  });
}

}  // extern "C"
