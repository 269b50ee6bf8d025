//! Option values shared by the commands: device, variant, density, output files.
use cutpaste::prelude::*;
use std::path::Path;

/// Parses `auto`, `cpu`, `cuda` or `cuda:N`. `auto` is resolved here (CUDA device 0 when this
/// build has CUDA and a GPU is usable, else the CPU) and prints one note when a GPU is present
/// but unused (e.g. a CPU-only build). An explicit CUDA device is checked where the network is
/// built (`DetectorParams::check`, `Detector::load`), so one that cannot be used ends the
/// command with a one-line `error: cannot use device cuda:N: <why>; <fix>` and exit code 1.
pub(crate) fn parse_device(s: &str) -> Result<Device, String> {
    use cutpaste::model::{resolve_device, CudaEnv, DeviceRequest};
    match s.parse::<DeviceRequest>().map_err(|e| e.to_string())? {
        DeviceRequest::Auto => {
            let choice = resolve_device(DeviceRequest::Auto, &CudaEnv::detect())
                .map_err(|e| e.to_string())?;
            if let Some(note) = choice.note {
                static ONCE: std::sync::Once = std::sync::Once::new();
                ONCE.call_once(|| eprintln!("note: {note}"));
            }
            Ok(choice.device)
        }
        DeviceRequest::Cpu => Ok(Device::Cpu),
        DeviceRequest::Cuda(i) => Ok(Device::Cuda(i)),
    }
}

/// The augmentation variants of the paper (Table 1/2).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum Variant {
    /// Normal vs CutPaste vs CutPaste-Scar (the paper's best).
    ThreeWay,
    /// Normal vs CutPaste.
    Cutpaste,
    /// Normal vs CutPaste-Scar.
    Scar,
    /// Normal vs either (one anomalous class).
    Union,
}

impl Variant {
    pub(crate) fn augmentation(self) -> Augmentation {
        match self {
            Variant::ThreeWay => Augmentation::three_way(),
            Variant::Cutpaste => Augmentation::cutpaste(),
            Variant::Scar => Augmentation::scar(),
            Variant::Union => Augmentation::union(),
        }
    }
}

/// Density estimators for the embeddings.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum DensityKind {
    /// Gaussian with Ledoit–Wolf shrinkage (paper default).
    Gaussian,
    /// Gaussian kernel density estimate.
    Kde,
}

impl DensityKind {
    pub(crate) fn density(self) -> Density {
        match self {
            DensityKind::Gaussian => Density::gaussian(),
            DensityKind::Kde => Density::kde(),
        }
    }
}

/// Refuses to replace a file the user already has unless `force`.
pub(crate) fn check_new_file(path: &Path, force: bool) -> Result<(), String> {
    if path.exists() && !force {
        return Err(format!(
            "{} already exists; choose another path or pass --force to replace it",
            path.display()
        ));
    }
    // an unwritable destination must fail now, not after a training run
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "cannot write {}: the folder {} does not exist; create it or choose another path",
            path.display(),
            dir.display()
        ));
    }
    tempfile::Builder::new()
        .prefix(".cutpaste-write-check")
        .tempfile_in(dir)
        .map_err(|e| {
            format!(
                "cannot write {} ({e}); choose a path in a writable folder",
                path.display()
            )
        })?;
    Ok(())
}

/// Opens an MVTec-layout category (`train/good`, `test/*`, `ground_truth/*`).
pub(crate) fn open_mvtec(dir: &Path, image_level_only: bool) -> cutpaste::Result<Dataset> {
    Dataset::mvtec_with(
        dir,
        MvtecOptions {
            allow_missing_masks: image_level_only,
        },
    )
}
