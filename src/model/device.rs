//! Choosing the device: CUDA when this build has it and a GPU is usable, the CPU otherwise, and a
//! one-line typed error ([`Error::DeviceUnavailable`]) instead of libtorch's C++ message and
//! backtrace when CUDA is asked for but cannot be used.
//!
//! The decision is a pure function ([`resolve_device`], [`CudaEnv::check`]) of what the build and
//! the machine offer ([`CudaEnv`]), so it is testable on any machine; [`CudaEnv::detect`] reads
//! the real machine cheaply: the `cuda` feature, libtorch's CUDA device count, and whether the
//! NVIDIA driver shows a GPU (`/dev/nvidia0` or an entry in `/proc/driver/nvidia/gpus`).
//!
//! ```
//! use cutpaste::model::{resolve_device, CudaEnv, DeviceRequest};
//! // A CPU-only build on a machine with a GPU: runs on the CPU and says how to get CUDA.
//! let env = CudaEnv { compiled: false, devices: 0, gpu_visible: true };
//! let choice = resolve_device(DeviceRequest::Auto, &env).unwrap();
//! assert_eq!(choice.device, tch::Device::Cpu);
//! assert!(choice.note.unwrap().contains("--features cli,cuda"));
//! // Asking for CUDA there is an error that names the cause and the fix.
//! let err = resolve_device("cuda".parse().unwrap(), &env).unwrap_err();
//! assert!(err.to_string().contains("without the `cuda` feature"));
//! ```
use crate::error::{Error, Result};
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;
use tch::Device;

/// How to get a CUDA build of the `cutpaste` command (the README's "CUDA" section).
pub const CUDA_BUILD_HINT: &str = "`CUTPASTE_FULL_TORCH=1 bash scripts/setup.sh`, then \
`cargo install --path . --features cli,cuda`";

/// The device a user asked for: `auto`, `cpu`, `cuda` or `cuda:N` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceRequest {
    /// CUDA device 0 when usable, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device `N`.
    Cuda(usize),
}

impl FromStr for DeviceRequest {
    type Err = Error;

    /// Parses `auto`, `cpu`, `cuda` (device 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| {
                    Error::invalid_param(
                        "device",
                        format!("unknown device `{s}`: use auto, cpu, cuda or cuda:N"),
                    )
                }),
        }
    }
}

/// What this build and this machine offer for CUDA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaEnv {
    /// Built with the `cuda` feature (`libtorch_cuda` linked).
    pub compiled: bool,
    /// CUDA devices libtorch can use (0 without the `cuda` feature).
    pub devices: usize,
    /// The NVIDIA driver shows a GPU, whether or not libtorch can use it.
    pub gpu_visible: bool,
}

impl CudaEnv {
    /// Reads this build and machine (once per process; later calls return the same answer).
    pub fn detect() -> Self {
        static ENV: OnceLock<CudaEnv> = OnceLock::new();
        *ENV.get_or_init(|| {
            super::precision::keep_cuda_linked();
            CudaEnv {
                compiled: cfg!(feature = "cuda"),
                devices: usize::try_from(tch::Cuda::device_count()).unwrap_or(0),
                gpu_visible: nvidia_gpu_visible(Path::new("/")),
            }
        })
    }

    /// `Ok` when `device` can be used here; else [`Error::DeviceUnavailable`] saying why (no
    /// CUDA in this build, no usable GPU, no such GPU index) and what to do.
    pub fn check(&self, device: Device) -> Result<()> {
        let index = match device {
            Device::Cpu => return Ok(()),
            Device::Cuda(i) => i,
            other => {
                return Err(Error::invalid_param(
                    "device",
                    format!("{other:?} is not supported; use the CPU or a CUDA device"),
                ))
            }
        };
        let problem = if !self.compiled {
            CudaProblem::NotCompiled
        } else if self.devices == 0 {
            CudaProblem::NoUsableGpu {
                gpu_visible: self.gpu_visible,
            }
        } else if index >= self.devices {
            CudaProblem::NoSuchGpu {
                count: self.devices,
            }
        } else {
            return Ok(());
        };
        Err(Error::DeviceUnavailable {
            device: format!("cuda:{index}"),
            problem,
        })
    }
}

/// Checks `device` against this build and machine ([`CudaEnv::detect`], [`CudaEnv::check`]).
/// Everything that builds a network on a device calls it first.
pub fn check_device(device: Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        _ => CudaEnv::detect().check(device),
    }
}

/// True when the NVIDIA driver under `root` (`/` on a real machine) shows a GPU.
pub(crate) fn nvidia_gpu_visible(root: &Path) -> bool {
    if root.join("dev/nvidia0").exists() {
        return true;
    }
    std::fs::read_dir(root.join("proc/driver/nvidia/gpus"))
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false)
}

/// Why a CUDA device cannot be used; its message says what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CudaProblem {
    /// This build has no CUDA support (built without the `cuda` feature).
    NotCompiled,
    /// Built with CUDA, but libtorch finds no usable GPU.
    NoUsableGpu {
        /// Whether the NVIDIA driver shows a GPU all the same (then libtorch or the driver is
        /// the problem, not the machine).
        gpu_visible: bool,
    },
    /// The GPU index is past the last usable GPU.
    NoSuchGpu {
        /// Usable GPUs (`cuda:0` … `cuda:count-1`).
        count: usize,
    },
}

impl std::fmt::Display for CudaProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotCompiled => write!(
                f,
                "this build of cutpaste has no CUDA support (it was built without the `cuda` \
                 feature); use the CPU (`--device cpu`, `Device::Cpu`) or build with CUDA: \
                 {CUDA_BUILD_HINT}"
            ),
            Self::NoUsableGpu { gpu_visible: false } => write!(
                f,
                "built with CUDA, but this machine shows no NVIDIA GPU (no /dev/nvidia0); use \
                 the CPU (`--device cpu`, `Device::Cpu`) or run on a machine with an NVIDIA GPU \
                 and its driver"
            ),
            Self::NoUsableGpu { gpu_visible: true } => write!(
                f,
                "built with CUDA and an NVIDIA GPU is present, but libtorch cannot use it; check \
                 the driver with `nvidia-smi` and that the libtorch found first (rpath or \
                 LD_LIBRARY_PATH) is the lib/ of a CUDA build of PyTorch 2.11, or use the CPU \
                 (`--device cpu`)"
            ),
            Self::NoSuchGpu { count } => write!(
                f,
                "this machine has {count} usable GPU(s); use cuda:0 to cuda:{}",
                count - 1
            ),
        }
    }
}

/// The device [`resolve_device`] picked and, when worth saying once, why it is not a GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceChoice {
    /// Where the network will run.
    pub device: Device,
    /// A one-line note for the user (e.g. a GPU is visible but this build has no CUDA).
    pub note: Option<String>,
}

/// Turns a request into a device. `auto` picks CUDA device 0 when usable and otherwise the CPU,
/// with a note when a GPU is visible but unused (no CUDA in this build, or libtorch cannot use
/// it). An explicit `cuda`/`cuda:N` that cannot be used is an [`Error::DeviceUnavailable`].
pub fn resolve_device(request: DeviceRequest, env: &CudaEnv) -> Result<DeviceChoice> {
    let cpu = |note: Option<String>| DeviceChoice {
        device: Device::Cpu,
        note,
    };
    match request {
        DeviceRequest::Cpu => Ok(cpu(None)),
        DeviceRequest::Cuda(i) => env.check(Device::Cuda(i)).map(|()| DeviceChoice {
            device: Device::Cuda(i),
            note: None,
        }),
        DeviceRequest::Auto if env.compiled && env.devices > 0 => Ok(DeviceChoice {
            device: Device::Cuda(0),
            note: None,
        }),
        DeviceRequest::Auto if env.gpu_visible && !env.compiled => Ok(cpu(Some(format!(
            "an NVIDIA GPU is present but this build of cutpaste has no CUDA support, so it runs \
             on the CPU; for the GPU build: {CUDA_BUILD_HINT}"
        )))),
        DeviceRequest::Auto if env.gpu_visible => Ok(cpu(Some(format!(
            "running on the CPU: {}",
            CudaProblem::NoUsableGpu { gpu_visible: true }
        )))),
        DeviceRequest::Auto => Ok(cpu(None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn env(compiled: bool, devices: usize, gpu_visible: bool) -> CudaEnv {
        CudaEnv {
            compiled,
            devices,
            gpu_visible,
        }
    }

    #[test]
    fn auto_picks_cuda_only_when_built_with_it_and_a_gpu_is_usable() {
        let pick = |e: CudaEnv| resolve_device(DeviceRequest::Auto, &e).unwrap();
        let gpu = pick(env(true, 2, true));
        assert_eq!(gpu.device, Device::Cuda(0));
        assert_eq!(gpu.note, None);
        // CPU-only build, GPU visible: CPU, and one note saying how to get the CUDA build.
        let cpu_build = pick(env(false, 0, true));
        assert_eq!(cpu_build.device, Device::Cpu);
        let note = cpu_build.note.unwrap();
        assert!(note.contains("no CUDA support") && note.contains(CUDA_BUILD_HINT));
        assert!(!note.contains('\n'));
        // CUDA build, driver shows a GPU, libtorch cannot use it: CPU, and a note about the
        // driver / library path.
        let broken = pick(env(true, 0, true));
        assert_eq!(broken.device, Device::Cpu);
        assert!(broken.note.unwrap().contains("nvidia-smi"));
        // No GPU anywhere: CPU, nothing to say.
        for e in [env(false, 0, false), env(true, 0, false)] {
            assert_eq!(
                pick(e),
                DeviceChoice {
                    device: Device::Cpu,
                    note: None
                }
            );
        }
    }

    #[test]
    fn explicit_cuda_that_cannot_run_names_the_cause_and_the_fix() {
        let problem = |e: CudaEnv, r: &str| match resolve_device(r.parse().unwrap(), &e) {
            Err(Error::DeviceUnavailable { device, problem }) => (device, problem),
            other => panic!("expected DeviceUnavailable, got {other:?}"),
        };
        assert_eq!(
            problem(env(false, 0, true), "cuda"),
            ("cuda:0".into(), CudaProblem::NotCompiled)
        );
        assert_eq!(
            problem(env(true, 0, false), "cuda:0").1,
            CudaProblem::NoUsableGpu { gpu_visible: false }
        );
        assert_eq!(
            problem(env(true, 2, true), "cuda:2"),
            ("cuda:2".into(), CudaProblem::NoSuchGpu { count: 2 })
        );
        let ok = resolve_device(DeviceRequest::Cuda(1), &env(true, 2, true)).unwrap();
        assert_eq!(ok.device, Device::Cuda(1));
        let msg = env(false, 0, false)
            .check(Device::Cuda(0))
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("cannot use device cuda:0: "), "{msg}");
        assert!(msg.contains("--device cpu") && msg.contains(CUDA_BUILD_HINT));
        assert!(!msg.contains('\n'));
        assert!(env(false, 0, false).check(Device::Cpu).is_ok());
    }

    #[test]
    fn requests_parse_and_bad_ones_name_the_option() {
        assert_eq!(
            "auto".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Auto
        );
        assert_eq!("cpu".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cpu);
        assert_eq!(
            "cuda".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Cuda(0)
        );
        assert_eq!(
            "cuda:3".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Cuda(3)
        );
        for bad in ["gpu", "cuda:", "cuda:x", "CUDA"] {
            let e = bad.parse::<DeviceRequest>().unwrap_err().to_string();
            assert!(e.contains("`device`") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn gpu_visibility_reads_the_driver_files() {
        let root = tempfile::tempdir().unwrap();
        assert!(!nvidia_gpu_visible(root.path()));
        let gpus = root.path().join("proc/driver/nvidia/gpus");
        std::fs::create_dir_all(&gpus).unwrap();
        assert!(
            !nvidia_gpu_visible(root.path()),
            "an empty gpus folder is no GPU"
        );
        std::fs::create_dir(gpus.join("0000:17:00.0")).unwrap();
        assert!(nvidia_gpu_visible(root.path()));
        let dev_root = tempfile::tempdir().unwrap();
        std::fs::create_dir(dev_root.path().join("dev")).unwrap();
        std::fs::write(dev_root.path().join("dev/nvidia0"), b"").unwrap();
        assert!(nvidia_gpu_visible(dev_root.path()));
    }

    #[test]
    fn this_machine_is_consistent_with_the_build() {
        let here = CudaEnv::detect();
        assert_eq!(here.compiled, cfg!(feature = "cuda"));
        if !here.compiled {
            assert_eq!(here.devices, 0, "without `cuda` libtorch cannot see a GPU");
            assert!(check_device(Device::Cuda(0)).is_err());
        }
        assert!(check_device(Device::Cpu).is_ok());
    }
}
