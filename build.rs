//! Build script: finds libtorch where torch-sys found it (`DEP_TCH_LIBTORCH_LIB`: `LIBTORCH`,
//! `LIBTORCH_USE_PYTORCH=1` or a system install), checks that it is 2.11.x, adds an rpath to it so
//! tests, examples and benches run with nothing exported, passes the folder on to dependents'
//! build scripts as `DEP_CUTPASTE_LIBTORCH_LIB`, and compiles the small C++ shims
//! `csrc/autocast.cpp`, `csrc/fused.cpp` and `csrc/threads.cpp`, and the fused training
//! BatchNorm kernels `csrc/stem.cpp` and `csrc/bn_act.cpp` (always optimised). Skipped entirely with `doc-only`.
use std::path::{Path, PathBuf};

const FIX: &str = "export LIBTORCH=<folder with lib/ and include/ of libtorch 2.11> (e.g. the \
torch/ folder of `pip install torch==2.11.0`), or set LIBTORCH_USE_PYTORCH=1 in a Python \
environment with torch 2.11; in a clone of cutpaste, `bash scripts/setup.sh` installs it into \
.venv/libtorch";

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_DOC_ONLY").is_some() {
        return;
    }
    let (include_root, lib) = libtorch_dirs();
    let libtorch = lib.parent().unwrap_or(&lib).to_path_buf();
    match libtorch_version(&libtorch) {
        Some(v) if v.starts_with("2.11.") => {}
        Some(v) => fail(&format!(
            "libtorch at {} is {v}, but tch 0.24 needs 2.11.x",
            libtorch.display()
        )),
        None => fail(&format!(
            "cannot read the libtorch version under {} (no build-version or version.py)",
            libtorch.display()
        )),
    }
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    // Read by dependents' build scripts as DEP_CUTPASTE_LIBTORCH_LIB (our `links` key).
    println!("cargo:libtorch_lib={}", lib.display());
    let cuda = std::env::var_os("CARGO_FEATURE_CUDA").is_some();
    if cuda {
        // rustc links with --as-needed, which would drop libtorch_cuda (nothing references it
        // directly) and leave `Device::cuda_if_available()` blind to the GPU; the
        // `-as-needed` link modifier is nightly-only, so the shim references a libtorch_cuda
        // symbol instead (see csrc/autocast.cpp, `cutpaste_cuda_link_anchor`).
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
    }
    compile_autocast_shim(&include_root, cuda);
}

/// The folder holding libtorch's `include/` and its `lib/` folder: torch-sys's choice when it
/// reports one (`DEP_TCH_LIBTORCH_LIB`, Linux and macOS), else `$LIBTORCH/lib`.
fn libtorch_dirs() -> (PathBuf, PathBuf) {
    println!("cargo:rerun-if-env-changed=LIBTORCH_INCLUDE");
    let (root, lib) = match std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        Some(lib) => {
            let lib = PathBuf::from(lib);
            let root = lib.parent().map(Path::to_path_buf).unwrap_or_default();
            (root, lib)
        }
        None => match std::env::var_os("LIBTORCH") {
            Some(p) => (PathBuf::from(&p), PathBuf::from(p).join("lib")),
            None => fail("LIBTORCH is not set"),
        },
    };
    // torch-sys reads headers from $LIBTORCH_INCLUDE/include when that is set.
    let root = std::env::var_os("LIBTORCH_INCLUDE").map_or(root, PathBuf::from);
    if !lib.is_dir() || !root.join("include").is_dir() {
        fail(&format!(
            "libtorch at {} has no lib/ folder, or {} no include/ folder",
            lib.display(),
            root.display()
        ));
    }
    (root, lib)
}

/// Compiles the libtorch calls tch's C API lacks: `csrc/autocast.cpp`, which switches CPU (and
/// CUDA) autocast on and off (see `src/model/precision.rs`; only c10 headers, about a second),
/// and `csrc/fused.cpp`, oneDNN's fused convolutions through the dispatcher (see
/// `src/model/fused.rs`; ATen core headers, about 7 seconds).
fn compile_autocast_shim(libtorch: &Path, cuda: bool) {
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    println!("cargo:rerun-if-changed=csrc/fused.cpp");
    println!("cargo:rerun-if-changed=csrc/threads.cpp");
    println!("cargo:rerun-if-changed=csrc/stem.cpp");
    println!("cargo:rerun-if-changed=csrc/bn_act.cpp");
    println!("cargo:rerun-if-changed=csrc/conv_gemm.cpp");
    println!("cargo:rerun-if-changed=csrc/bn_kernels.h");
    println!("cargo:rerun-if-changed=csrc/shim.h");
    println!("cargo:rerun-if-changed=csrc/sgd.cpp");
    println!("cargo:rerun-if-changed=csrc/parallel.h");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    // The PyPI wheels and the cxx11 libtorch zips use the new ABI; torch-sys reads the same
    // variable with the same default.
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_string());
    let mut build = cc::Build::new();
    if cuda {
        build.define("CUTPASTE_CUDA", None);
    }
    build
        .cpp(true)
        .file("csrc/autocast.cpp")
        .file("csrc/fused.cpp")
        .file("csrc/threads.cpp")
        .include(libtorch.join("include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .compile("cutpaste_autocast");
    // The fused training kernels' loops are the kernels themselves: optimised (and vectorised per instruction set,
    // see its `target_clones`) in every profile, or debug test builds would crawl.
    cc::Build::new()
        .cpp(true)
        .file("csrc/stem.cpp")
        .file("csrc/bn_act.cpp")
        .file("csrc/conv_gemm.cpp")
        .file("csrc/sgd.cpp")
        .include(libtorch.join("include"))
        .include(libtorch.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .opt_level(3)
        .debug(false)
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .compile("cutpaste_stem");
}

/// Version from `build-version` (libtorch zip) or `version.py` (PyPI wheel).
fn libtorch_version(root: &Path) -> Option<String> {
    if let Ok(s) = std::fs::read_to_string(root.join("build-version")) {
        return Some(s.trim().to_string());
    }
    let py = std::fs::read_to_string(root.join("version.py")).ok()?;
    let line = py.lines().find(|l| l.starts_with("__version__"))?;
    Some(line.split(['\'', '"']).nth(1)?.to_string())
}

fn fail(what: &str) -> ! {
    eprintln!("\nerror: {what}.\nfix: {FIX}\n");
    panic!("cutpaste build: {what}; fix: {FIX}");
}
