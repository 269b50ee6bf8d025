// Autocast control for cutpaste (src/model/precision.rs).
//
// tch 0.24's C API only toggles CUDA autocast, so CPU bf16 mixed precision needs these few
// calls into libtorch. The declarations below are copied from ATen/autocast_mode.h of libtorch
// 2.11 (build.rs checks the version) instead of including it: that header pulls in all of ATen
// and would make this file take minutes to compile.
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <c10/macros/Export.h>

namespace at::autocast {
TORCH_API bool is_autocast_enabled(c10::DeviceType device_type);
TORCH_API void set_autocast_enabled(c10::DeviceType device_type, bool enabled);
TORCH_API c10::ScalarType get_autocast_dtype(c10::DeviceType device_type);
TORCH_API void set_autocast_dtype(c10::DeviceType device_type, c10::ScalarType dtype);
TORCH_API void clear_cache();
TORCH_API int increment_nesting();
TORCH_API int decrement_nesting();
}  // namespace at::autocast

#ifdef CUTPASTE_CUDA
// Declared in ATen/cuda/CUDAContextLight.h (libtorch_cuda.so); only its address is taken.
namespace at::cuda {
int warp_size();
}  // namespace at::cuda
#endif

extern "C" {

// Enables autocast to `dtype` (a c10::ScalarType code) for `device` (a c10::DeviceType code) on
// the calling thread and stores the previous state. Returns 0 on success, 1 on failure.
int cutpaste_autocast_enter(int device, int dtype, int* prev_enabled, int* prev_dtype) {
  try {
    auto dev = static_cast<c10::DeviceType>(device);
    *prev_enabled = at::autocast::is_autocast_enabled(dev) ? 1 : 0;
    *prev_dtype = static_cast<int>(at::autocast::get_autocast_dtype(dev));
    at::autocast::set_autocast_enabled(dev, true);
    at::autocast::set_autocast_dtype(dev, static_cast<c10::ScalarType>(dtype));
    at::autocast::increment_nesting();
    return 0;
  } catch (...) {
    return 1;
  }
}

// Leaves an autocast region opened by cutpaste_autocast_enter: clears the cast-weight cache when
// the outermost region closes and restores the previous state. Returns 0 on success, 1 on failure.
int cutpaste_autocast_exit(int device, int prev_enabled, int prev_dtype) {
  try {
    auto dev = static_cast<c10::DeviceType>(device);
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(dev, prev_enabled != 0);
    at::autocast::set_autocast_dtype(dev, static_cast<c10::ScalarType>(prev_dtype));
    return 0;
  } catch (...) {
    return 1;
  }
}

// 1 when autocast is enabled for `device` on the calling thread, 0 when not, -1 on failure.
int cutpaste_autocast_is_enabled(int device) {
  try {
    return at::autocast::is_autocast_enabled(static_cast<c10::DeviceType>(device)) ? 1 : 0;
  } catch (...) {
    return -1;
  }
}

#ifdef CUTPASTE_CUDA
// Referencing a libtorch_cuda symbol keeps that library linked although rustc links with
// --as-needed (and the `as-needed` link modifier is nightly-only): without it
// Device::cuda_if_available() cannot see the GPU. Called (never dereferenced) from Rust.
const void* cutpaste_cuda_link_anchor() {
  return reinterpret_cast<const void*>(&at::cuda::warp_size);
}
#endif

}  // extern "C"
