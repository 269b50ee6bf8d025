// The training stem's BatchNorm + ReLU + 3x3/2 max-pool as one autograd function for the CPU
// (src/model/fused_train.rs). ResNet-18's stem (PAPER.md: ResNet-18 backbone, BatchNorm over the
// batch) runs on the largest activation of the network, [N, 64, H/2, W/2]: libtorch's three kernels
// read and write it about 13 times a step (batch statistics, normalise, ReLU, pool with int64
// indices, and the three backwards). Here the forward reads it twice (statistics, then normalise,
// ReLU and pool in one pass, keeping a one-byte window position per pooled value) and the backward
// twice (the gradient sums, then the input gradient), so the step moves a third of the bytes.
//
// The arithmetic is libtorch's: batch mean and biased variance normalise, the unbiased variance
// updates the running one (momentum as in torch.nn.BatchNorm2d), the normalised value is rounded
// to the input's precision before the ReLU and the pool compare (bf16 under autocast), the pool
// keeps the first maximum of each window in row-major order (NaN wins), and the backward is
//   dz = dpool scattered to the arg-max positions, zeroed where the ReLU output is 0;
//   dx = gamma * invstd * (dz - mean(dz) - xhat * mean(dz * xhat)),
//   dgamma = sum(dz * xhat), dbeta = sum(dz).
// Sums run in fixed blocks merged in block order (double precision), so results do not depend on
// the number of threads. Only contiguous channels-last fp32 or bf16 input: anything else is
// reported as not applicable and the caller runs libtorch's kernels.
#include "bn_kernels.h"

namespace {

// The ReLU of the normalised value as the pool sees it: rounded to the input's precision.
template <typename T>
CP_INLINE float relu_bn(typename T::S x, float a, float b) {
  const float z = T::load(T::store(T::load(x) * a + b));
  return (z > 0.f || z != z) ? z : 0.f;
}

// Output row (n, oh): out[ow, c] = max over the window of relu(x*a + b), idx = window position.
// `rows` (3*W*C floats) holds the window's three input rows normalised, so that each input value
// is normalised once per output row instead of once per window.
template <typename T>
CP_INLINE void pool_row(const typename T::S* __restrict__ xn, int64_t oh, int64_t H, int64_t W,
                        int64_t OW, int64_t C, const float* __restrict__ a,
                        const float* __restrict__ b, typename T::S* __restrict__ out,
                        uint8_t* __restrict__ idx, float* __restrict__ mx,
                        float* __restrict__ rows) {
  for (int64_t kh = 0; kh < 3; ++kh) {
    const int64_t ih = 2 * oh - 1 + kh;
    if (ih < 0 || ih >= H) continue;
    const typename T::S* __restrict__ xr = xn + ih * W * C;
    float* __restrict__ r = rows + kh * W * C;
    for (int64_t w = 0; w < W; ++w)
      for (int64_t c = 0; c < C; ++c) r[w * C + c] = relu_bn<T>(xr[w * C + c], a[c], b[c]);
  }
  for (int64_t ow = 0; ow < OW; ++ow) {
    for (int64_t c = 0; c < C; ++c) mx[c] = -std::numeric_limits<float>::infinity();
    uint8_t* __restrict__ ag = idx + ow * C;
    for (int64_t c = 0; c < C; ++c) ag[c] = 0;
    for (int64_t kh = 0; kh < 3; ++kh) {
      const int64_t ih = 2 * oh - 1 + kh;
      if (ih < 0 || ih >= H) continue;
      for (int64_t kw = 0; kw < 3; ++kw) {
        const int64_t iw = 2 * ow - 1 + kw;
        if (iw < 0 || iw >= W) continue;
        const float* __restrict__ p = rows + (kh * W + iw) * C;
        const uint8_t k = static_cast<uint8_t>(kh * 3 + kw);
        for (int64_t c = 0; c < C; ++c) {
          const float v = p[c];
          const bool up = v > mx[c] || v != v;
          mx[c] = up ? v : mx[c];
          ag[c] = up ? k : ag[c];
        }
      }
    }
    // the window's values were rounded by relu_bn: the maximum is stored as it is
    for (int64_t c = 0; c < C; ++c) out[ow * C + c] = T::exact(mx[c]);
  }
}

// dz of input row ih (before the ReLU mask): the pooled gradients of the windows whose
// arg-max lies in this row, summed per position. dp, idx: image n's [OH, OW, C].
template <typename T>
CP_INLINE void dz_row(const typename T::S* __restrict__ dp, const uint8_t* __restrict__ idx,
                      int64_t ih, int64_t W, int64_t OH, int64_t OW, int64_t C,
                      float* __restrict__ dz) {
  std::fill(dz, dz + W * C, 0.f);
  for (int64_t oh = std::max<int64_t>(0, ih / 2); oh <= std::min(OH - 1, (ih + 1) / 2); ++oh) {
    const int64_t kh = ih - 2 * oh + 1;
    if (kh < 0 || kh > 2) continue;
    for (int64_t ow = 0; ow < OW; ++ow) {
      const typename T::S* __restrict__ g = dp + (oh * OW + ow) * C;
      const uint8_t* __restrict__ ag = idx + (oh * OW + ow) * C;
      for (int64_t kw = 0; kw < 3; ++kw) {
        const int64_t iw = 2 * ow - 1 + kw;
        if (iw < 0 || iw >= W) continue;
        const uint8_t k = static_cast<uint8_t>(kh * 3 + kw);
        float* __restrict__ d = dz + iw * C;
        for (int64_t c = 0; c < C; ++c) {
          const float gv = T::load(g[c]);  // loaded unconditionally: a select, not a branch
          d[c] += ag[c] == k ? gv : 0.f;
        }
      }
    }
  }
}

// x's value and dz masked by the ReLU: 0 where relu(x*a + b), rounded as the forward rounds it,
// is 0, i.e. where x*a + b is at most the largest value that rounds to 0 (NaN keeps dz).
template <typename T>
CP_INLINE float masked(typename T::S x, float dz, float a, float b, float& xv) {
  xv = T::load(x);
  return xv * a + b <= T::zero_max() ? 0.f : dz;
}

// Masks dz by the ReLU (kept where its output is not 0) and adds the row's sum(dz) and
// sum(dz * xhat) to s1, s2.
template <typename T>
CP_INLINE void grad_sums_row(const typename T::S* __restrict__ x, float* __restrict__ dz,
                             int64_t W, int64_t C, const float* __restrict__ a,
                             const float* __restrict__ b, const float* __restrict__ mean,
                             const float* __restrict__ invstd, float* __restrict__ s1,
                             float* __restrict__ s2) {
  for (int64_t w = 0; w < W; ++w)
    for (int64_t c = 0; c < C; ++c) {
      float xv;
      const float d = masked<T>(x[w * C + c], dz[w * C + c], a[c], b[c], xv);
      dz[w * C + c] = d;
      s1[c] += d;
      s2[c] += d * (xv - mean[c]) * invstd[c];
    }
}

// dx = k1 * dz + k2 * x + k3 with the ReLU mask applied to dz.
template <typename T>
CP_INLINE void grad_x_row(const typename T::S* __restrict__ x, const float* __restrict__ dz,
                          int64_t W, int64_t C, const float* __restrict__ a,
                          const float* __restrict__ b, const float* __restrict__ k1,
                          const float* __restrict__ k2, const float* __restrict__ k3,
                          typename T::S* __restrict__ dx) {
  for (int64_t w = 0; w < W; ++w)
    for (int64_t c = 0; c < C; ++c) {
      float xv;
      const float d = masked<T>(x[w * C + c], dz[w * C + c], a[c], b[c], xv);
      dx[w * C + c] = T::store(k1[c] * d + k2[c] * xv + k3[c]);
    }
}

// Vectorised copies of the row kernels per instruction set (CUTPASTE_CLONES).
#define CUTPASTE_INSTANTIATE(T)                                                                   \
  CUTPASTE_CLONES void pool_row_##T(const T::S* xn, int64_t oh, int64_t H, int64_t W,           \
                                    int64_t OW, int64_t C, const float* a, const float* b,       \
                                    T::S* out, uint8_t* idx, float* mx, float* rows) {           \
    pool_row<T>(xn, oh, H, W, OW, C, a, b, out, idx, mx, rows);                                  \
  }                                                                                              \
  CUTPASTE_CLONES void dz_row_##T(const T::S* dp, const uint8_t* idx, int64_t ih, int64_t W,    \
                                  int64_t OH, int64_t OW, int64_t C, float* dz) {                \
    dz_row<T>(dp, idx, ih, W, OH, OW, C, dz);                                                    \
  }                                                                                              \
  CUTPASTE_CLONES void grad_sums_row_##T(const T::S* x, float* dz, int64_t W, int64_t C,        \
                                         const float* a, const float* b, const float* mean,      \
                                         const float* invstd, float* s1, float* s2) {            \
    grad_sums_row<T>(x, dz, W, C, a, b, mean, invstd, s1, s2);                                   \
  }                                                                                              \
  CUTPASTE_CLONES void grad_x_row_##T(const T::S* x, const float* dz, int64_t W, int64_t C,     \
                                      const float* a, const float* b, const float* k1,           \
                                      const float* k2, const float* k3, T::S* dx) {              \
    grad_x_row<T>(x, dz, W, C, a, b, k1, k2, k3, dx);                                            \
  }

CUTPASTE_INSTANTIATE(F32)
CUTPASTE_INSTANTIATE(Bf16)

// Dispatch by element type to the instantiations above.
template <typename T>
struct Kern;
template <>
struct Kern<F32> {
  static constexpr auto pool = pool_row_F32;
  static constexpr auto dz = dz_row_F32;
  static constexpr auto sums = grad_sums_row_F32;
  static constexpr auto gx = grad_x_row_F32;
};
template <>
struct Kern<Bf16> {
  static constexpr auto pool = pool_row_Bf16;
  static constexpr auto dz = dz_row_Bf16;
  static constexpr auto sums = grad_sums_row_Bf16;
  static constexpr auto gx = grad_x_row_Bf16;
};

template <typename T>
void pool_forward(const at::Tensor& x, const Shape& s, const float* a, const float* b,
                  at::Tensor& out, at::Tensor& idx) {
  const auto* xp = reinterpret_cast<const typename T::S*>(x.data_ptr());
  auto* op = reinterpret_cast<typename T::S*>(out.data_ptr());
  auto* ip = idx.data_ptr<uint8_t>();
  const int64_t rows = s.N * s.OH, blocks = std::min(kBlocks * 4, rows);
  parallel_blocks(blocks, [&](int64_t blk) {
    std::vector<float> mx(s.C), window(3 * s.W * s.C);
    auto [lo, hi] = block_rows(blk, rows, blocks);
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t n = r / s.OH, oh = r % s.OH;
      Kern<T>::pool(xp + n * s.H * s.W * s.C, oh, s.H, s.W, s.OW, s.C, a, b,
                    op + r * s.OW * s.C, ip + r * s.OW * s.C, mx.data(), window.data());
    }
  });
}

// The input gradient and the sums dgamma = sum(dz * xhat), dbeta = sum(dz).
template <typename T>
void stem_backward(const at::Tensor& dp_t, const at::Tensor& idx_t, const at::Tensor& x_t,
                   const Shape& s, const float* a, const float* b, const float* mean,
                   const float* invstd, const float* gamma, at::Tensor& dx_t,
                   std::vector<double>& s1, std::vector<double>& s2) {
  const auto* dp = reinterpret_cast<const typename T::S*>(dp_t.data_ptr());
  const auto* idx = idx_t.data_ptr<uint8_t>();
  const auto* x = reinterpret_cast<const typename T::S*>(x_t.data_ptr());
  auto* dx = reinterpret_cast<typename T::S*>(dx_t.data_ptr());
  const int64_t C = s.C, rows = s.N * s.H, blocks = std::min(kBlocks, rows);
  const int64_t out_img = s.OH * s.OW * C;
  // pass 1: the sums, per block in double, merged in block order
  std::vector<double> p1(blocks * C, 0.0), p2(blocks * C, 0.0);
  parallel_blocks(blocks, [&](int64_t blk) {
    std::vector<float> dz(s.W * C), r1(C), r2(C);
    auto [lo, hi] = block_rows(blk, rows, blocks);
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t n = r / s.H, ih = r % s.H;
      Kern<T>::dz(dp + n * out_img, idx + n * out_img, ih, s.W, s.OH, s.OW, C, dz.data());
      std::fill(r1.begin(), r1.end(), 0.f);
      std::fill(r2.begin(), r2.end(), 0.f);
      Kern<T>::sums(x + r * s.W * C, dz.data(), s.W, C, a, b, mean, invstd, r1.data(), r2.data());
      for (int64_t c = 0; c < C; ++c) p1[blk * C + c] += r1[c], p2[blk * C + c] += r2[c];
    }
  });
  std::vector<float> k1, k2, k3;
  input_grad_coefficients(s, p1, p2, blocks, gamma, mean, invstd, s1, s2, k1, k2, k3);
  // pass 2: the input gradient
  const int64_t blocks2 = std::min(kBlocks * 4, rows);
  parallel_blocks(blocks2, [&](int64_t blk) {
    std::vector<float> dz(s.W * C);
    auto [lo, hi] = block_rows(blk, rows, blocks2);
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t n = r / s.H, ih = r % s.H;
      Kern<T>::dz(dp + n * out_img, idx + n * out_img, ih, s.W, s.OH, s.OW, C, dz.data());
      Kern<T>::gx(x + r * s.W * C, dz.data(), s.W, C, a, b, k1.data(), k2.data(), k3.data(),
                  dx + r * s.W * C);
    }
  });
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct StemBnReluPool : public torch::autograd::Function<StemBnReluPool> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& gamma,
                            const at::Tensor& beta, at::Tensor running_mean,
                            at::Tensor running_var, double momentum, double eps) {
    const Shape s = shape_of(x);
    const bool bf16 = x.scalar_type() == at::kBFloat16;
    std::vector<double> mean, var;
    batch_stats_of(x, s, mean, var);
    std::vector<double> invstd, a, b;
    affine_and_running(s, mean, var, gamma, beta, running_mean, running_var, momentum, eps,
                       invstd, a, b);
    auto a_t = f32(a), b_t = f32(b);
    auto cl = at::MemoryFormat::ChannelsLast;
    auto out = at::empty({s.N, s.C, s.OH, s.OW}, x.options().memory_format(cl));
    auto idx = at::empty({s.N, s.C, s.OH, s.OW}, x.options().dtype(at::kByte).memory_format(cl));
    if (bf16)
      pool_forward<Bf16>(x, s, a_t.data_ptr<float>(), b_t.data_ptr<float>(), out, idx);
    else
      pool_forward<F32>(x, s, a_t.data_ptr<float>(), b_t.data_ptr<float>(), out, idx);
    ctx->save_for_backward({x, gamma, idx, a_t, b_t, f32(mean), f32(invstd)});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto sv = ctx->get_saved_variables();
    const auto &x = sv[0], &gamma = sv[1], &idx = sv[2], &a = sv[3], &b = sv[4];
    const auto &mean = sv[5], &invstd = sv[6];
    const Shape s = shape_of(x);
    auto dp = grads[0].to(x.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast);
    auto dx = at::empty_like(x, x.options().memory_format(at::MemoryFormat::ChannelsLast));
    std::vector<double> s1, s2;
    auto gf = gamma.to(at::kFloat).contiguous();
    const float *ap = a.data_ptr<float>(), *bp = b.data_ptr<float>();
    const float *mp = mean.data_ptr<float>(), *ip = invstd.data_ptr<float>();
    if (x.scalar_type() == at::kBFloat16)
      stem_backward<Bf16>(dp, idx, x, s, ap, bp, mp, ip, gf.data_ptr<float>(), dx, s1, s2);
    else
      stem_backward<F32>(dp, idx, x, s, ap, bp, mp, ip, gf.data_ptr<float>(), dx, s1, s2);
    return {dx, f32(s2), f32(s1), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

const char* cutpaste_stem_last_error() { return last_error.c_str(); }

// *out = maxpool3x3/2(relu(batch_norm(x))) in training mode, the running statistics updated in
// place. 0 on success, 1 on failure (message: cutpaste_stem_last_error), 2 when the input is not
// one this kernel takes (then nothing was changed).
int cutpaste_stem_train(const at::Tensor* x, const at::Tensor* gamma, const at::Tensor* beta,
                        const at::Tensor* running_mean, const at::Tensor* running_var,
                        double momentum, double eps, at::Tensor** out) {
  const at::Tensor& t = *x;
  if (!input_ok(t, *gamma, *beta, *running_mean, *running_var)) return 2;
  return guarded([&] {
    auto y = StemBnReluPool::apply(t, *gamma, *beta, *running_mean, *running_var, momentum, eps);
    *out = new at::Tensor(std::move(y));
  });
}

}  // extern "C"
