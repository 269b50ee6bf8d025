// Fused oneDNN convolutions for cutpaste's frozen inference backbone (src/model/fused.rs).
//
// libtorch registers oneDNN's convolution with fused post-ops and its weight prepacking as the
// `mkldnn::` operators that PyTorch's compiler uses on the CPU; tch's C API (generated from the
// `aten::` operators only) does not reach them, so these few calls go through the dispatcher.
// Tensors cross the boundary as tch's `C_tensor` handles, which are `at::Tensor*`. Every
// function returns 0 on success and 1 on failure; the message of a failure is kept per thread
// for `cutpaste_fused_last_error`.
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/ivalue.h>

#include <string>
#include <vector>

#include "shim.h"

namespace {

// The operator `name` (overload `overload`), looked up once per call site; throws when this
// libtorch was built without oneDNN.
c10::OperatorHandle op(const char* name, const char* overload) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, overload);
}

std::vector<int64_t> pair(int64_t v) { return {v, v}; }

// Appends what every oneDNN convolution operator takes after its input(s): weight, bias (None
// when null), padding, stride, dilation 1 and groups 1.
void push_conv(std::vector<c10::IValue>& stack, const at::Tensor* w, const at::Tensor* b,
               int64_t padding, int64_t stride) {
  stack.push_back(*w);
  stack.push_back(b ? c10::IValue(*b) : c10::IValue());
  stack.push_back(pair(padding));
  stack.push_back(pair(stride));
  stack.push_back(pair(1));
  stack.push_back(int64_t{1});
}

}  // namespace

extern "C" {

// 1 when this libtorch has the oneDNN operators used below, else 0.
int cutpaste_fused_available() {
  try {
    auto& d = c10::Dispatcher::singleton();
    bool ok = d.findSchema({"mkldnn::_convolution_pointwise", ""}).has_value() &&
              d.findSchema({"mkldnn::_convolution_pointwise_", "binary"}).has_value() &&
              d.findSchema({"mkldnn::_reorder_convolution_weight", ""}).has_value();
    return ok ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

// The message of this thread's last failure (valid until the next call on this thread).
const char* cutpaste_fused_last_error() { return last_error.c_str(); }

// `*out` = `w` ([C_out, C_in, k, k]) reordered into the blocked layout oneDNN's convolution uses
// for this padding and stride (for any input size), so that it is not reordered on every call.
int cutpaste_fused_prepack(const at::Tensor* w, int64_t padding, int64_t stride, at::Tensor** out) {
  return guarded([&] {
    static const c10::OperatorHandle reorder = op("mkldnn::_reorder_convolution_weight", "");
    std::vector<c10::IValue> stack{*w, pair(padding), pair(stride), pair(1), int64_t{1},
                                   c10::IValue()};
    reorder.callBoxed(&stack);
    *out = new at::Tensor(stack.at(0).toTensor());
  });
}

// `*out` = conv2d(x, w, b) with `padding` and `stride`, followed by a ReLU when `relu` is
// non-zero, in one oneDNN primitive.
int cutpaste_fused_conv(const at::Tensor* x, const at::Tensor* w, const at::Tensor* b,
                        int64_t padding, int64_t stride, int relu, at::Tensor** out) {
  return guarded([&] {
    static const c10::OperatorHandle conv = op("mkldnn::_convolution_pointwise", "");
    std::vector<c10::IValue> stack{*x};
    push_conv(stack, w, b, padding, stride);
    stack.push_back(std::string(relu ? "relu" : "none"));
    stack.push_back(c10::List<std::optional<at::Scalar>>());
    stack.push_back(std::string(""));
    conv.callBoxed(&stack);
    *out = new at::Tensor(stack.at(0).toTensor());
  });
}

// acc = relu(acc + conv2d(x, w, b)), in place in `acc` (oneDNN's sum post-op): the end of a
// residual block.
int cutpaste_fused_conv_add_relu_(const at::Tensor* acc, const at::Tensor* x, const at::Tensor* w,
                                  const at::Tensor* b, int64_t padding, int64_t stride) {
  return guarded([&] {
    static const c10::OperatorHandle conv = op("mkldnn::_convolution_pointwise_", "binary");
    std::vector<c10::IValue> stack{*acc, *x};
    push_conv(stack, w, b, padding, stride);
    stack.push_back(std::string("add"));
    stack.push_back(at::Scalar(1.0));
    stack.push_back(std::string("relu"));
    stack.push_back(c10::List<std::optional<at::Scalar>>());
    stack.push_back(std::string(""));
    conv.callBoxed(&stack);
  });
}

}  // extern "C"
