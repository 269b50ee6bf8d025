// What the CPU kernels of csrc/ share beyond ATen: per-instruction-set clones and a thread split
// that does not depend on how libtorch was built (OpenMP or not).
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <utility>
#include <vector>

namespace {

// Row kernels are inlined into each instruction-set clone, so that each is vectorised for it.
#define CP_INLINE __attribute__((always_inline)) inline
// Vectorised copies of a function per instruction set (chosen once at load time); x86-64 only,
// elsewhere one copy for the compiler's target.
#if defined(__x86_64__)
#define CUTPASTE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CUTPASTE_CLONES
#endif

// ---- the work split: `blocks` fixed blocks over at::get_num_threads() threads ----

// Runs f(block) for every block in [0, blocks) on up to this thread's intra-op thread count.
template <typename F>
void parallel_blocks(int64_t blocks, F f) {
  const int64_t threads = std::min<int64_t>(std::max(at::get_num_threads(), 1), blocks);
  std::atomic<int64_t> next{0};
  auto work = [&] {
    for (int64_t b = next++; b < blocks; b = next++) f(b);
  };
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
}

// Rows [lo, hi) of block b of `rows` rows.
inline std::pair<int64_t, int64_t> block_rows(int64_t b, int64_t rows, int64_t blocks) {
  return {b * rows / blocks, (b + 1) * rows / blocks};
}

}  // namespace
