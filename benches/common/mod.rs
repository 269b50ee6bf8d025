//! Helpers shared by the benches (`mod common;`): environment knobs, thread count, peak RSS,
//! medians.
#![allow(dead_code)]

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

pub fn env_usize(name: &str, default: usize) -> usize {
    env_or(name, &default.to_string())
        .parse()
        .unwrap_or(default)
}

pub fn threads() -> usize {
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    env_usize("CUTPASTE_BENCH_THREADS", all)
}

pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// What ours runs with (src/bin/cutpaste/malloc_conf.rs): jemalloc keeps freed pages.
pub const MALLOC_CONF: &str = "dirty_decay_ms:-1,muzzy_decay_ms:-1";

/// A jemalloc shared library to preload into the PyTorch reference for its `-jemalloc`
/// configurations (PyTorch's CPU tuning guide recommends it): `CUTPASTE_BENCH_JEMALLOC`, else
/// Debian's `libjemalloc2` (`apt-get install libjemalloc2`; `benches/reference/setup.sh`).
pub fn jemalloc_library() -> Option<String> {
    let path = env_or(
        "CUTPASTE_BENCH_JEMALLOC",
        "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    );
    std::path::Path::new(&path).is_file().then_some(path)
}

/// Sets `cmd` up to run with jemalloc preloaded and ours's jemalloc options, when `on` and the
/// library is there; returns whether it did (a `-jemalloc` configuration is skipped otherwise).
pub fn preload_jemalloc(cmd: &mut std::process::Command, on: bool) -> bool {
    if !on {
        return true;
    }
    match jemalloc_library() {
        Some(lib) => {
            cmd.env("LD_PRELOAD", lib).env("MALLOC_CONF", MALLOC_CONF);
            true
        }
        None => {
            eprintln!(
                "bench: no jemalloc library (apt-get install libjemalloc2, or set \
                 CUTPASTE_BENCH_JEMALLOC); the -jemalloc reference is skipped"
            );
            false
        }
    }
}

/// `line` with `"allocator"` set: `jemalloc` (preloaded) or `system`.
pub fn with_allocator(mut line: serde_json::Value, jemalloc: bool) -> serde_json::Value {
    line["allocator"] = serde_json::json!(if jemalloc { "jemalloc" } else { "system" });
    line
}
