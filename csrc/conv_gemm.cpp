// Convolutions as matrix products over the whole batch (src/model/conv_gemm.rs), for the CPU in
// training mode.
//
// oneDNN's CPU convolution kernels work image by image: where a layer's output has only a few
// positions (ResNet-18's layer4 is 2x2 when training on 64² crops, 8x8 at 256²), each image's
// products are tiny, and the weight gradient takes 3-4x the forward's time. Here the input is
// unfolded into patches once for the whole batch,
//   cols = [N*Ho*Wo, k*k*C]  (patch order kh, kw, c: a channels-last weight's order),
// and one GEMM (AMX in bf16, accumulated in fp32 as oneDNN's kernels accumulate) does the work:
//   ConvMmWgrad: forward and input gradient oneDNN's; dW = dy^T · cols,
//   ConvGemm:    y = cols · W^T, dW = dy^T · cols, dx = col2im(dy · W), cols kept from the forward.
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cstring>

#include "shim.h"

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// A convolution's geometry: square k x k kernel, the same stride and padding on both axes.
struct Geom {
  int64_t k, stride, pad;
  int64_t out(int64_t n) const { return (n + 2 * pad - k) / stride + 1; }
};

Geom geom_of(AutogradContext* ctx) {
  return {ctx->saved_data["k"].toInt(), ctx->saved_data["stride"].toInt(),
          ctx->saved_data["pad"].toInt()};
}

void save_geom(AutogradContext* ctx, const Geom& g) {
  ctx->saved_data["k"] = g.k;
  ctx->saved_data["stride"] = g.stride;
  ctx->saved_data["pad"] = g.pad;
}

// The patches of channels-last x [N, C, H, W] under the kernel: [N*Ho*Wo, k*k*C]. A patch's
// kernel row is k neighbouring positions of one input row, k*C contiguous values in channels-last
// memory: one memcpy each (zeros where it reaches into the padding), on the calling thread (split
// across threads it measured level: the copy is memory-bound and small in a step). A quarter of
// the time of a strided copy (as_strided + reshape) at ResNet-18's sizes.
at::Tensor patches(const at::Tensor& x, const Geom& g) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = g.out(H), Wo = g.out(W), k = g.k;
  auto cols = at::empty({N * Ho * Wo, k * k * C}, x.options());  // [N*Ho*Wo, k*k*C]
  const int64_t tap = C * x.element_size();                       // bytes of one position
  const char* src = static_cast<const char*>(x.data_ptr());      // [N, H, W, C] memory
  char* dst = static_cast<char*>(cols.data_ptr());
  for (int64_t nh = 0; nh < N * Ho; ++nh) {
    const int64_t n = nh / Ho, ho = nh % Ho;
    for (int64_t wo = 0; wo < Wo; ++wo) {
      char* d = dst + (nh * Wo + wo) * k * k * tap;
      const int64_t w0 = wo * g.stride - g.pad;  // input column of the patch's first tap
      const int64_t lo = std::min(k, std::max<int64_t>(0, -w0));
      const int64_t hi = std::max(lo, std::min(k, W - w0));  // taps [lo, hi) inside the input
      for (int64_t i = 0; i < k; ++i, d += k * tap) {
        const int64_t h = ho * g.stride - g.pad + i;
        if (h < 0 || h >= H) {
          std::memset(d, 0, k * tap);
          continue;
        }
        std::memset(d, 0, lo * tap);
        if (hi > lo)
          std::memcpy(d + lo * tap, src + ((n * H + h) * W + w0 + lo) * tap, (hi - lo) * tap);
        std::memset(d + hi * tap, 0, (k - hi) * tap);
      }
    }
  }
  return cols;
}

// [O, C, k, k] weight -> [O, k*k*C] (a view for a channels-last weight).
at::Tensor weight_rows(const at::Tensor& w) {
  return w.permute({0, 2, 3, 1}).reshape({w.size(0), -1});
}

// dy [N, O, Ho, Wo] -> [N*Ho*Wo, O] (a view for a channels-last dy).
at::Tensor grad_rows(const at::Tensor& dy) {
  return dy.permute({0, 2, 3, 1}).reshape({-1, dy.size(1)});
}

// dW [O, C, k, k] (channels-last memory) = dy^T · cols.
at::Tensor weight_grad(const at::Tensor& dy, const at::Tensor& cols, int64_t C, int64_t k) {
  const int64_t O = dy.size(1);
  auto g = grad_rows(dy).t().mm(cols);                // [O, k*k*C]
  return g.view({O, k, k, C}).permute({0, 3, 1, 2});  // [O, C, k, k]
}

// dx [N, C, H, W] (channels-last) = col2im(dy · W): each patch's gradient added back where the
// patch was read, summed in fp32 and rounded once to dy's dtype.
at::Tensor input_grad(const at::Tensor& dy, const at::Tensor& w, at::IntArrayRef x_size,
                      const Geom& g) {
  const int64_t N = x_size[0], C = x_size[1], H = x_size[2], W = x_size[3];
  const int64_t Ho = dy.size(2), Wo = dy.size(3), p = g.pad, s = g.stride;
  auto dcols = grad_rows(dy).mm(weight_rows(w)).view({N, Ho, Wo, g.k, g.k, C});
  auto dxp = at::zeros({N, H + 2 * p, W + 2 * p, C}, dy.options().dtype(at::kFloat));
  const auto st = dxp.strides();
  for (int64_t i = 0; i < g.k; ++i)
    for (int64_t j = 0; j < g.k; ++j)
      // the padded positions that tap (i, j) of every patch read: [N, Ho, Wo, C]
      dxp.as_strided({N, Ho, Wo, C}, {st[0], st[1] * s, st[2] * s, st[3]}, i * st[1] + j * st[2])
          .add_(dcols.select(4, j).select(3, i));
  auto dx = dxp.slice(1, p, p + H).slice(2, p, p + W).to(dy.scalar_type());  // [N, H, W, C]
  return dx.permute({0, 3, 1, 2});
}

// oneDNN's forward and input gradient; the weight gradient as one product.
struct ConvMmWgrad : public torch::autograd::Function<ConvMmWgrad> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            int64_t stride, int64_t pad) {
    ctx->save_for_backward({x, w});
    save_geom(ctx, {w.size(2), stride, pad});
    return at::convolution(x, w, {}, {stride, stride}, {pad, pad}, {1, 1}, false, {0, 0}, 1);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1];
    const Geom g = geom_of(ctx);
    const auto& dy = grads[0];
    at::Tensor dx, dw;
    if (ctx->needs_input_grad(0))
      dx = std::get<0>(at::convolution_backward(dy, x, w, c10::nullopt, {g.stride, g.stride},
                                                {g.pad, g.pad}, {1, 1}, false, {0, 0}, 1,
                                                {true, false, false}));
    if (ctx->needs_input_grad(1)) dw = weight_grad(dy, patches(x, g), x.size(1), g.k);
    return {dx, dw, at::Tensor(), at::Tensor()};
  }
};

// The whole convolution as products: forward, input gradient and weight gradient.
struct ConvGemm : public torch::autograd::Function<ConvGemm> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            int64_t stride, int64_t pad) {
    const Geom g{w.size(2), stride, pad};
    const int64_t N = x.size(0), O = w.size(0);
    auto cols = patches(x, g);                  // [N*Ho*Wo, k*k*C]
    auto y = cols.mm(weight_rows(w).t());       // [N*Ho*Wo, O]
    ctx->save_for_backward({cols, w});
    save_geom(ctx, g);
    ctx->saved_data["x_size"] = x.sizes();
    // [N*Ho*Wo, O] -> [N, Ho, Wo, O] -> [N, O, Ho, Wo] (channels-last)
    return y.view({N, g.out(x.size(2)), g.out(x.size(3)), O}).permute({0, 3, 1, 2});
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &cols = saved[0], &w = saved[1];
    const Geom g = geom_of(ctx);
    const auto x_size = ctx->saved_data["x_size"].toIntVector();
    const auto& dy = grads[0];
    at::Tensor dx, dw;
    if (ctx->needs_input_grad(0)) dx = input_grad(dy, w, x_size, g);
    if (ctx->needs_input_grad(1)) dw = weight_grad(dy, cols, x_size[1], g.k);
    return {dx, dw, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

const char* cutpaste_conv_gemm_last_error() { return last_error.c_str(); }

// *out = conv2d(x, w, stride, padding) (no bias, no dilation, one group) as an autograd
// function: `whole` 0 computes the weight gradient as one product (ConvMmWgrad), 1 the whole
// convolution (ConvGemm). x and w must be CPU tensors of one dtype (fp32 or bf16), x contiguous
// channels-last, w square. 0 on success, 1 on failure (message: cutpaste_conv_gemm_last_error),
// 2 when the input is not one this function takes (then nothing was done).
int cutpaste_conv_gemm_train(const at::Tensor* x, const at::Tensor* w, int64_t stride,
                             int64_t pad, int whole, at::Tensor** out) {
  const at::Tensor &t = *x, &k = *w;
  const auto dtype = t.scalar_type();
  if (!(t.device().is_cpu() && k.device().is_cpu() && t.dim() == 4 && k.dim() == 4 &&
        (dtype == at::kFloat || dtype == at::kBFloat16) && k.scalar_type() == dtype &&
        t.is_contiguous(at::MemoryFormat::ChannelsLast) && k.size(1) == t.size(1) &&
        k.size(2) == k.size(3) && stride >= 1 && pad >= 0 && t.size(2) + 2 * pad >= k.size(2) &&
        t.size(3) + 2 * pad >= k.size(3)))
    return 2;
  return guarded([&] {
    auto y = whole ? ConvGemm::apply(t, k, stride, pad) : ConvMmWgrad::apply(t, k, stride, pad);
    *out = new at::Tensor(std::move(y));
  });
}

}  // extern "C"
