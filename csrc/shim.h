// The error convention of cutpaste's C++ shims: a function returns 0 on success and 1 on
// failure, and the failure's message is kept per thread for the shim's `…_last_error()`.
#pragma once
#include <exception>
#include <string>

namespace {

thread_local std::string last_error;

// Runs `f`, turning a C++ exception into return code 1 and its message into `last_error`.
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
