// The calling thread's own libtorch intra-op thread count, for scoring streams
// (src/model/threads.rs).
//
// at::set_num_threads (tch::set_num_threads) also stores the process-wide count that every new
// thread starts from, so a stream that wants one thread would change it for the whole process.
// In libtorch's OpenMP build the count a thread uses is its own OpenMP setting, which
// omp_set_num_threads changes for the calling thread alone. libtorch sets a thread's count once,
// lazily, on its first at::get_num_threads or parallel_for; calling at::get_num_threads first
// makes that happen before ours, so it cannot undo it later.
#include <ATen/Parallel.h>
#include <dlfcn.h>

extern "C" {

// Sets the calling thread's intra-op threads to n; returns the count libtorch then reports for
// this thread (n on success), or 0 when OpenMP's setter is not in the process.
int cutpaste_set_thread_intraop(int n) {
  (void)at::get_num_threads();
  using SetFn = void (*)(int);
  static const SetFn set = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  if (set == nullptr || n < 1) {
    return 0;
  }
  set(n);
  return at::get_num_threads();
}

}  // extern "C"
