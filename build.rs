//! Build script: checks that libtorch 2.11.x is where `LIBTORCH` points and adds an rpath to it,
//! so tests, examples and benches run with nothing exported, and compiles the small autocast shim
//! `csrc/autocast.cpp`. Skipped entirely with `doc-only`.
use std::path::{Path, PathBuf};

const FIX: &str =
    "run `bash scripts/setup.sh` from the crate root (it installs libtorch 2.11.0 from \
the PyPI torch wheel into .venv/libtorch), or export LIBTORCH=<folder with lib/ and include/ of \
libtorch 2.11>";

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_DOC_ONLY").is_some() {
        return;
    }
    let libtorch = match std::env::var_os("LIBTORCH") {
        Some(p) => PathBuf::from(p),
        None => fail("LIBTORCH is not set"),
    };
    if !libtorch.join("lib").is_dir() || !libtorch.join("include").is_dir() {
        fail(&format!(
            "LIBTORCH={} has no lib/ and include/ folders",
            libtorch.display()
        ));
    }
    match libtorch_version(&libtorch) {
        Some(v) if v.starts_with("2.11.") => {}
        Some(v) => fail(&format!(
            "LIBTORCH={} holds libtorch {v}, but tch 0.24 needs 2.11.x",
            libtorch.display()
        )),
        None => fail(&format!(
            "cannot read the libtorch version under LIBTORCH={} (no build-version or version.py)",
            libtorch.display()
        )),
    }
    let lib = libtorch.join("lib");
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    let cuda = std::env::var_os("CARGO_FEATURE_CUDA").is_some();
    if cuda {
        // rustc links with --as-needed, which would drop libtorch_cuda (nothing references it
        // directly) and leave `Device::cuda_if_available()` blind to the GPU; the
        // `-as-needed` link modifier is nightly-only, so the shim references a libtorch_cuda
        // symbol instead (see csrc/autocast.cpp, `cutpaste_cuda_link_anchor`).
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
    }
    compile_autocast_shim(&libtorch, cuda);
}

/// Compiles `csrc/autocast.cpp`, the few libtorch calls that switch CPU (and CUDA) autocast on
/// and off, which tch's C API lacks (see `src/model/precision.rs`). It includes only c10 headers,
/// so it compiles in about a second.
fn compile_autocast_shim(libtorch: &Path, cuda: bool) {
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
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
        .include(libtorch.join("include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .compile("cutpaste_autocast");
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
