// A convolution whose weight gradient is one matrix product over the whole batch
// (src/model/conv_wgrad.rs), for the CPU in training mode.
//
// oneDNN's weight-gradient kernels reduce over each image's output positions separately: where a
// layer's output has only a few positions (ResNet-18's layer4 at 2x2 when training on 64² crops,
// 8x8 at 256²), each image's product is tiny and the weight gradient takes 3-4x the forward's
// time. Here the backward unfolds the input into patches once for the whole batch,
//   cols = [N*Ho*Wo, kh*kw*C]  (patch order kh, kw, c: the channels-last weight's),
// and computes dW = dy^T · cols as one [O, N*Ho*Wo] x [N*Ho*Wo, kh*kw*C] product (one bf16 AMX
// or fp32 GEMM, accumulated in fp32 as oneDNN's kernels accumulate). The forward and the input
// gradient are libtorch's (oneDNN), unchanged.
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "shim.h"

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The patches of channels-last x [N, C, H, W] seen by a k x k kernel: [N*Ho*Wo, k*k*C].
at::Tensor patches(const at::Tensor& x, int64_t k, int64_t stride, int64_t pad) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
  auto xh = x.permute({0, 2, 3, 1});  // [N, H, W, C], contiguous
  auto xp = pad ? at::constant_pad_nd(xh, {0, 0, pad, pad, pad, pad}) : xh;  // [N, H+2p, W+2p, C]
  const auto s = xp.strides();
  // [N, Ho, Wo, k, k, C] view of the padded input, then copied to rows of one patch each
  auto v = xp.as_strided({N, Ho, Wo, k, k, C}, {s[0], s[1] * stride, s[2] * stride, s[1], s[2], s[3]});
  return v.reshape({N * Ho * Wo, k * k * C});
}

// dW [O, C, k, k] (channels-last memory) = dy^T · patches(x).
at::Tensor weight_grad(const at::Tensor& dy, const at::Tensor& x, int64_t k, int64_t stride,
                       int64_t pad) {
  const int64_t O = dy.size(1), C = x.size(1);
  auto d = dy.permute({0, 2, 3, 1}).reshape({-1, O});  // [N*Ho*Wo, O]
  auto g = d.t().mm(patches(x, k, stride, pad));        // [O, k*k*C]
  return g.view({O, k, k, C}).permute({0, 3, 1, 2});    // [O, C, k, k]
}

struct ConvMmWgrad : public torch::autograd::Function<ConvMmWgrad> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            int64_t stride, int64_t pad) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["pad"] = pad;
    return at::convolution(x, w, {}, {stride, stride}, {pad, pad}, {1, 1}, false, {0, 0}, 1);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1];
    const int64_t stride = ctx->saved_data["stride"].toInt(), pad = ctx->saved_data["pad"].toInt();
    const auto& dy = grads[0];
    at::Tensor dx, dw;
    if (ctx->needs_input_grad(0))
      dx = std::get<0>(at::convolution_backward(dy, x, w, c10::nullopt, {stride, stride},
                                                {pad, pad}, {1, 1}, false, {0, 0}, 1,
                                                {true, false, false}));
    if (ctx->needs_input_grad(1)) dw = weight_grad(dy, x, w.size(2), stride, pad);
    return {dx, dw, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

const char* cutpaste_conv_wgrad_last_error() { return last_error.c_str(); }

// *out = conv2d(x, w, stride, padding) (no bias, no dilation, one group) as an autograd function
// whose weight gradient is one matrix product. x and w must be CPU tensors of one dtype (fp32
// or bf16), x contiguous channels-last, w square. 0 on success, 1 on failure (message:
// cutpaste_conv_wgrad_last_error), 2 when the input is not one this function takes (then
// nothing was done).
int cutpaste_conv_wgrad_train(const at::Tensor* x, const at::Tensor* w, int64_t stride,
                              int64_t pad, at::Tensor** out) {
  const at::Tensor &t = *x, &k = *w;
  const auto dtype = t.scalar_type();
  if (!(t.device().is_cpu() && k.device().is_cpu() && t.dim() == 4 && k.dim() == 4 &&
        (dtype == at::kFloat || dtype == at::kBFloat16) && k.scalar_type() == dtype &&
        t.is_contiguous(at::MemoryFormat::ChannelsLast) && k.size(1) == t.size(1) &&
        k.size(2) == k.size(3) && stride >= 1 && pad >= 0 &&
        t.size(2) + 2 * pad >= k.size(2) && t.size(3) + 2 * pad >= k.size(3)))
    return 2;
  return guarded([&] { *out = new at::Tensor(ConvMmWgrad::apply(t, k, stride, pad)); });
}

}  // extern "C"
