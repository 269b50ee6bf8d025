// What the fused training BatchNorm kernels share (csrc/stem.cpp, csrc/bn_act.cpp): fp32/bf16
// element conversions, the thread split, batch statistics and small helpers. Every tensor here
// is contiguous channels-last, so a row (n, h) is W*C contiguous values, channel fastest.
#pragma once
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "parallel.h"
#include "shim.h"

namespace {

// ---- element conversions (fp32 and bf16 stored as uint16, round to nearest even) ----

struct F32 {
  using S = float;
  static CP_INLINE float load(S v) { return v; }
  static CP_INLINE S store(float v) { return v; }
  // store() of a value already representable in S (no rounding to do).
  static CP_INLINE S exact(float v) { return v; }
  // v <= zero_max exactly when store(v) <= 0 (store rounds tiny positives to 0 in bf16).
  static CP_INLINE float zero_max() { return 0.f; }
};

struct Bf16 {
  using S = uint16_t;
  static CP_INLINE float load(S v) {
    uint32_t u = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  static CP_INLINE S store(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    const uint32_t r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16;
    return static_cast<S>(f != f ? 0x7FC0u : r);
  }
  static CP_INLINE S exact(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return static_cast<S>(u >> 16);
  }
  // store() rounds a positive float to +0 exactly when its bits are at most 0x8000 (half the
  // smallest bf16 subnormal, ties to even).
  static CP_INLINE float zero_max() {
    const uint32_t u = 0x8000u;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

constexpr int64_t kBlocks = 64;


// ---- row kernels; x is channels-last, so a row (n, h) is W*C contiguous values ----

// One row's per-channel mean and sum of squared deviations (two passes over the cached row).
template <typename T>
CP_INLINE void row_stats(const typename T::S* __restrict__ x, int64_t W, int64_t C,
                         float* __restrict__ mean, float* __restrict__ m2) {
  for (int64_t c = 0; c < C; ++c) mean[c] = 0.f, m2[c] = 0.f;
  for (int64_t w = 0; w < W; ++w)
    for (int64_t c = 0; c < C; ++c) mean[c] += T::load(x[w * C + c]);
  for (int64_t c = 0; c < C; ++c) mean[c] /= static_cast<float>(W);
  for (int64_t w = 0; w < W; ++w)
    for (int64_t c = 0; c < C; ++c) {
      const float d = T::load(x[w * C + c]) - mean[c];
      m2[c] += d * d;
    }
}

CUTPASTE_CLONES void row_stats_f32(const float* x, int64_t W, int64_t C, float* m, float* m2) {
  row_stats<F32>(x, W, C, m, m2);
}
CUTPASTE_CLONES void row_stats_bf16(const uint16_t* x, int64_t W, int64_t C, float* m, float* m2) {
  row_stats<Bf16>(x, W, C, m, m2);
}
inline void row_stats_of(const float* x, int64_t W, int64_t C, float* m, float* m2) {
  row_stats_f32(x, W, C, m, m2);
}
inline void row_stats_of(const uint16_t* x, int64_t W, int64_t C, float* m, float* m2) {
  row_stats_bf16(x, W, C, m, m2);
}

// ---- whole-tensor passes ----

struct Shape {
  int64_t N, C, H, W, OH, OW;
};

Shape shape_of(const at::Tensor& x) {
  Shape s{x.size(0), x.size(1), x.size(2), x.size(3), 0, 0};
  s.OH = (s.H - 1) / 2 + 1;  // kernel 3, stride 2, padding 1, floor mode
  s.OW = (s.W - 1) / 2 + 1;
  return s;
}

// Per-channel batch mean and biased variance (double), merged over blocks in block order
// (Chan et al.'s pairwise update).
template <typename T>
void batch_stats(const typename T::S* x, const Shape& s, std::vector<double>& mean,
                 std::vector<double>& var) {
  const int64_t rows = s.N * s.H, C = s.C, blocks = std::min(kBlocks, rows);
  std::vector<double> bm(blocks * C, 0.0), b2(blocks * C, 0.0), bn(blocks, 0.0);
  parallel_blocks(blocks, [&](int64_t blk) {
    std::vector<float> rm(C), r2(C);
    double* m = &bm[blk * C];
    double* m2 = &b2[blk * C];
    double n = 0;
    auto [lo, hi] = block_rows(blk, rows, blocks);
    for (int64_t r = lo; r < hi; ++r) {
      row_stats_of(x + r * s.W * C, s.W, C, rm.data(), r2.data());
      const double nb = static_cast<double>(s.W), tot = n + nb;
      for (int64_t c = 0; c < C; ++c) {
        const double d = rm[c] - m[c];
        m[c] += d * nb / tot;
        m2[c] += r2[c] + d * d * n * nb / tot;
      }
      n = tot;
    }
    bn[blk] = n;
  });
  mean.assign(C, 0.0);
  var.assign(C, 0.0);
  double n = 0;
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const double nb = bn[blk], tot = n + nb;
    if (nb == 0) continue;
    for (int64_t c = 0; c < C; ++c) {
      const double d = bm[blk * C + c] - mean[c];
      mean[c] += d * nb / tot;
      var[c] += b2[blk * C + c] + d * d * n * nb / tot;
    }
    n = tot;
  }
  for (int64_t c = 0; c < C; ++c) var[c] /= n;
}

// batch_stats of x (contiguous channels-last fp32 or bf16).
void batch_stats_of(const at::Tensor& x, const Shape& s, std::vector<double>& mean,
                    std::vector<double>& var) {
  if (x.scalar_type() == at::kBFloat16)
    batch_stats<Bf16>(reinterpret_cast<const uint16_t*>(x.data_ptr()), s, mean, var);
  else
    batch_stats<F32>(x.data_ptr<float>(), s, mean, var);
}

at::Tensor f32(const std::vector<double>& v) {
  auto t = at::empty({static_cast<int64_t>(v.size())}, at::kFloat);
  for (size_t i = 0; i < v.size(); ++i) t.data_ptr<float>()[i] = static_cast<float>(v[i]);
  return t;
}

// The per-block sums p1 = sum(dz), p2 = sum(dz * xhat) ([blocks, C]) merged in block order into
// s1, s2, and the input gradient's per-channel coefficients dx = k1 * dz + k2 * x + k3, i.e.
// dx = g*dz - g*s1/n - g*invstd*s2/n*(x - mean) with g = gamma*invstd and n = N*H*W.
void input_grad_coefficients(const Shape& s, const std::vector<double>& p1,
                             const std::vector<double>& p2, int64_t blocks, const float* gamma,
                             const float* mean, const float* invstd, std::vector<double>& s1,
                             std::vector<double>& s2, std::vector<float>& k1,
                             std::vector<float>& k2, std::vector<float>& k3) {
  const int64_t C = s.C;
  s1.assign(C, 0.0);
  s2.assign(C, 0.0);
  for (int64_t blk = 0; blk < blocks; ++blk)
    for (int64_t c = 0; c < C; ++c) s1[c] += p1[blk * C + c], s2[c] += p2[blk * C + c];
  const double cnt = static_cast<double>(s.N * s.H * s.W);
  k1.assign(C, 0.f);
  k2.assign(C, 0.f);
  k3.assign(C, 0.f);
  for (int64_t c = 0; c < C; ++c) {
    const double g = gamma[c] * static_cast<double>(invstd[c]);
    const double proj = g * invstd[c] * s2[c] / cnt;
    k1[c] = static_cast<float>(g);
    k2[c] = static_cast<float>(-proj);
    k3[c] = static_cast<float>(proj * mean[c] - g * s1[c] / cnt);
  }
}

bool param_ok(const at::Tensor& t, int64_t c) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 1 &&
         t.size(0) == c && t.is_contiguous();
}

// Whether the fused kernels take x ([N, C, H, W]: contiguous channels-last fp32 or bf16 on the
// CPU, more than one value per channel) with these fp32 [C] BatchNorm variables.
bool input_ok(const at::Tensor& t, const at::Tensor& gamma, const at::Tensor& beta,
              const at::Tensor& running_mean, const at::Tensor& running_var) {
  return t.defined() && t.device().is_cpu() && t.dim() == 4 &&
         (t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16) &&
         t.is_contiguous(at::MemoryFormat::ChannelsLast) && t.size(0) > 0 && t.size(2) > 0 &&
         t.size(3) > 0 && t.size(0) * t.size(2) * t.size(3) > 1 && param_ok(gamma, t.size(1)) &&
         param_ok(beta, t.size(1)) && param_ok(running_mean, t.size(1)) &&
         param_ok(running_var, t.size(1));
}

// Updates the running statistics in place (momentum as torch.nn.BatchNorm2d, the unbiased
// variance) and gives invstd and the affine map y = x * a + b of the batch normalisation:
// a = gamma * invstd, b = beta - mean * a (fp32 products, as libtorch's kernels).
void affine_and_running(const Shape& s, const std::vector<double>& mean,
                        const std::vector<double>& var, const at::Tensor& gamma,
                        const at::Tensor& beta, at::Tensor& running_mean, at::Tensor& running_var,
                        double momentum, double eps, std::vector<double>& invstd,
                        std::vector<double>& a, std::vector<double>& b) {
  const double cnt = static_cast<double>(s.N * s.H * s.W);
  {  // running statistics, as torch.nn.BatchNorm2d: the unbiased variance
    float* rm = running_mean.data_ptr<float>();
    float* rv = running_var.data_ptr<float>();
    for (int64_t c = 0; c < s.C; ++c) {
      rm[c] = static_cast<float>((1.0 - momentum) * rm[c] + momentum * mean[c]);
      rv[c] = static_cast<float>((1.0 - momentum) * rv[c] +
                                 momentum * var[c] * cnt / std::max(cnt - 1.0, 1.0));
    }
  }
  invstd.assign(s.C, 0.0);
  a.assign(s.C, 0.0);
  b.assign(s.C, 0.0);
  const float* g = gamma.data_ptr<float>();
  const float* be = beta.data_ptr<float>();
  for (int64_t c = 0; c < s.C; ++c) {
    invstd[c] = 1.0 / std::sqrt(var[c] + eps);
    const float af = static_cast<float>(g[c] * static_cast<float>(invstd[c]));
    a[c] = af;
    b[c] = be[c] - static_cast<float>(mean[c]) * af;
  }
}

}  // namespace
