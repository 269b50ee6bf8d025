// Synchronised BatchNorm for data-parallel training on the CPU (src/model/parallel.rs): two
// threads each run half of a batch through their own copy of the network, and every BatchNorm
// normalises with the statistics of the whole batch, as one thread with the whole batch would
// (PAPER.md: BatchNorm over the batch of 32 images x 3 views).
//
// Forward: each rank's per-channel mean and biased variance (libtorch's batch-norm statistics
// kernel, fp32), exchanged and combined (Chan et al.'s pairwise formula), then libtorch's
// batch norm in evaluation mode with the combined statistics. Backward: libtorch's
// evaluation-mode batch-norm backward gives dy * gamma * invstd and each rank's sums of dy and
// dy * xhat; exchanged, they give the terms of the batch statistics' own gradient:
//   dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)),
// with the means over the whole batch. Exchanges combine rank 0's and rank 1's tensors in that
// order, so the result does not depend on which thread arrives first.
// libtorch's autograd headers have unused parameters, which cc's -Wextra reports at every build
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <string>

namespace {

thread_local std::string last_error;

// Two ranks meeting at each exchange; `abort` wakes a rank whose partner failed.
struct Group {
  std::mutex m;
  std::condition_variable cv;
  int arrived = 0;
  uint64_t round = 0;
  bool aborted = false;
  at::Tensor slot[2];
  at::Tensor out[2];

  // Both ranks' tensors, in rank order.
  std::pair<at::Tensor, at::Tensor> exchange(int64_t rank, const at::Tensor& t) {
    std::unique_lock<std::mutex> lk(m);
    if (aborted) throw std::runtime_error("the other training stream failed");
    const uint64_t mine = round;
    slot[rank] = t;
    if (++arrived == 2) {
      out[0] = slot[0];
      out[1] = slot[1];
      slot[0] = slot[1] = at::Tensor();
      arrived = 0;
      ++round;
      cv.notify_all();
      return {out[0], out[1]};
    }
    cv.wait(lk, [&] { return round != mine || aborted; });
    if (round == mine) throw std::runtime_error("the other training stream failed");
    return {out[0], out[1]};
  }

  void abort() {
    std::lock_guard<std::mutex> lk(m);
    aborted = true;
    cv.notify_all();
  }
};

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct SyncBatchNorm : public torch::autograd::Function<SyncBatchNorm> {
  // x: [N, C, ...]; gamma, beta, running stats: [C] fp32. Rank 0 updates the running
  // statistics (both ranks' copies share them).
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& gamma,
                            const at::Tensor& beta, at::Tensor running_mean,
                            at::Tensor running_var, double momentum, double eps, int64_t group,
                            int64_t rank) {
    auto* g = reinterpret_cast<Group*>(group);
    const int64_t c = x.size(1);
    const double n = static_cast<double>(x.numel() / c);
    // fp32 scratch running statistics with momentum 0: the statistics come back in fp32
    auto opts = at::TensorOptions().dtype(at::kFloat).device(x.device());
    auto [mean, var] = at::batch_norm_update_stats(x, at::zeros({c}, opts), at::ones({c}, opts), 0.0);
    auto mine = at::stack({mean, var, at::full({c}, n, opts)});  // [3, C]
    auto [a, b] = g->exchange(rank, mine);
    auto na = a[2], nb = b[2], total = na + nb;
    auto delta = b[0] - a[0];
    auto gmean = a[0] + delta * nb / total;
    auto gvar = (a[1] * na + b[1] * nb) / total + delta * delta * na * nb / (total * total);
    const double big_n = total[0].item<double>();
    if (rank == 0 && running_mean.defined()) {
      at::NoGradGuard no_grad;
      running_mean.mul_(1.0 - momentum).add_(gmean, momentum);
      running_var.mul_(1.0 - momentum).add_(gvar * (big_n / std::max(big_n - 1.0, 1.0)), momentum);
    }
    auto y = std::get<0>(at::native_batch_norm(x, gamma, beta, gmean, gvar, false, 0.0, eps));
    ctx->save_for_backward({x, gamma, gmean, gvar});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["group"] = group;
    ctx->saved_data["rank"] = rank;
    ctx->saved_data["n"] = big_n;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &gamma = saved[1], &gmean = saved[2], &gvar = saved[3];
    const double eps = ctx->saved_data["eps"].toDouble();
    auto* g = reinterpret_cast<Group*>(ctx->saved_data["group"].toInt());
    const int64_t rank = ctx->saved_data["rank"].toInt();
    const double big_n = ctx->saved_data["n"].toDouble();
    auto dy = grads[0].contiguous(x.suggest_memory_format());
    // dx_eval = dy * gamma * invstd; sum_dy_xhat, sum_dy over this rank's half
    auto [dx_eval, sum_dy_xhat, sum_dy] = at::native_batch_norm_backward(
        dy, x, gamma, gmean, gvar, {}, {}, false, eps, {true, true, true});
    auto [a, b] = g->exchange(rank, at::stack({sum_dy_xhat, sum_dy}));
    auto s_xhat = a[0] + b[0], s_dy = a[1] + b[1];
    auto invstd = (gvar + eps).rsqrt();
    auto k = gamma.to(at::kFloat) * invstd / big_n;
    // dx = dx_eval - (x * scale + shift), per channel: the batch statistics' gradient
    auto scale = k * invstd * s_xhat;
    auto shift = k * (s_dy - gmean * invstd * s_xhat);
    auto ones = at::ones_like(gvar) - eps;  // invstd 1: native_batch_norm is then x*scale+shift
    auto corr = std::get<0>(
        at::native_batch_norm(x, scale, shift, at::zeros_like(gmean), ones, false, 0.0, eps));
    auto dx = dx_eval - corr;
    // each rank's half of the weight gradients: the trainer sums the ranks' gradients
    return {dx, s_xhat * 0.5, s_dy * 0.5, at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

template <typename F>
int guarded(F f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return 1;
}

}  // namespace

extern "C" {

void* cutpaste_syncbn_group_new() { return new Group(); }

void cutpaste_syncbn_group_free(void* g) { delete reinterpret_cast<Group*>(g); }

void cutpaste_syncbn_group_abort(void* g) { reinterpret_cast<Group*>(g)->abort(); }

const char* cutpaste_syncbn_last_error() { return last_error.c_str(); }

// Batch norm of *x over both ranks' batches (training mode); 0 on success, 1 on failure.
int cutpaste_syncbn(const at::Tensor* x, const at::Tensor* gamma, const at::Tensor* beta,
                    const at::Tensor* running_mean, const at::Tensor* running_var,
                    double momentum, double eps, void* group, int64_t rank, at::Tensor** out) {
  return guarded([&] {
    auto y = SyncBatchNorm::apply(*x, *gamma, *beta, *running_mean, *running_var, momentum, eps,
                                  reinterpret_cast<int64_t>(group), rank);
    *out = new at::Tensor(std::move(y));
  });
}

}  // extern "C"
