//! jemalloc's options for the whole process. Included by the `cutpaste` binary and by the
//! examples and benches that declare jemalloc their global allocator (`#[path]` modules).
//!
//! With tikv-jemallocator's `unprefixed_malloc_on_supported_platforms` (see Cargo.toml),
//! jemalloc also serves libtorch's C++ allocations (`malloc`, `posix_memalign`, `free`), which
//! would otherwise go to glibc. glibc hands every allocation above 32 MiB straight to `mmap` and
//! back to the kernel when freed, and jemalloc's default decay gives freed pages back within
//! seconds, so every training step faulted in and zeroed its activations anew: at 256², 96 views
//! a step, the kernel's page-fault and page-clearing work was ~29 % of the step (`perf`).
//! Keeping freed pages in the process (no decay) lets the next step reuse them: training at 256²
//! ran 1.5× faster at the same peak RSS (docs/results.md, "Memory reuse"). The memory is kept
//! until the process ends, as PyTorch's caching allocators keep theirs.

/// Read by jemalloc at start-up (it overrides jemalloc's weak default `malloc_conf`); the
/// environment variable `MALLOC_CONF` still applies on top of it.
#[used]
#[export_name = "malloc_conf"]
static MALLOC_CONF: &[u8; 36] = b"dirty_decay_ms:-1,muzzy_decay_ms:-1\0";
