//! Safetensors reading and atomic writing shared by pretrained loading and checkpoints.
use crate::error::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// A safetensors file read into memory (or borrowed bytes), header validated; `path` names it
/// in errors.
pub(crate) struct StFile<'a> {
    path: PathBuf,
    bytes: Cow<'a, [u8]>,
}

fn corrupt(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        reason: format!(
            "not a valid safetensors file ({e}); the file may be truncated or of another format: \
             write it again (safetensors.torch.save_file or Classifier::save_weights)"
        ),
    }
}

impl StFile<'static> {
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        StFile::new(path, Cow::Owned(bytes))
    }
}

impl<'a> StFile<'a> {
    /// `bytes` of a safetensors file, named `path` in errors.
    pub(crate) fn new(path: &Path, bytes: Cow<'a, [u8]>) -> Result<Self> {
        SafeTensors::deserialize(&bytes).map_err(|e| corrupt(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
        })
    }

    fn parsed(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.bytes).map_err(|e| corrupt(&self.path, e))
    }

    /// The `__metadata__` map (empty when absent).
    pub(crate) fn metadata(&self) -> Result<HashMap<String, String>> {
        let (_, meta) =
            SafeTensors::read_metadata(&self.bytes).map_err(|e| corrupt(&self.path, e))?;
        Ok(meta.metadata().clone().unwrap_or_default())
    }

    /// Name → shape of every tensor in the file.
    pub(crate) fn shapes(&self) -> Result<BTreeMap<String, Vec<i64>>> {
        Ok(self
            .parsed()?
            .tensors()
            .into_iter()
            .map(|(name, view)| (name, view.shape().iter().map(|&s| s as i64).collect()))
            .collect())
    }

    /// Tensor `name` as fp32 on `device` (f16/bf16/f64 files are converted).
    pub(crate) fn tensor(&self, name: &str, device: Device) -> Result<Tensor> {
        let st = self.parsed()?;
        let view = st.tensor(name).map_err(|e| corrupt(&self.path, e))?;
        let kind = match view.dtype() {
            Dtype::F32 => Kind::Float,
            Dtype::F16 => Kind::Half,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::F64 => Kind::Double,
            other => {
                return Err(Error::Checkpoint {
                    path: self.path.clone(),
                    reason: format!(
                        "tensor `{name}` has dtype {other:?}; expected a floating-point tensor \
                         (F32, F16, BF16 or F64)"
                    ),
                })
            }
        };
        let size: Vec<i64> = view.shape().iter().map(|&s| s as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &size, kind)?;
        Ok(t.f_to_kind(Kind::Float)?.f_to_device(device)?)
    }

    /// Checks the file's names and shapes against `expected` (name → variable) and copies the
    /// values in. Names for which `ignorable` is true may be in the file without a variable.
    /// Any missing, unexpected or mis-shaped tensor is one [`Error::WeightsMismatch`] listing all.
    pub(crate) fn load_into(
        &self,
        expected: &BTreeMap<String, Tensor>,
        ignorable: impl Fn(&str) -> bool,
    ) -> Result<()> {
        let shapes = self.shapes()?;
        let missing: Vec<String> = expected
            .keys()
            .filter(|k| !shapes.contains_key(*k))
            .cloned()
            .collect();
        let unexpected: Vec<String> = shapes
            .keys()
            .filter(|k| !expected.contains_key(*k) && !ignorable(k))
            .cloned()
            .collect();
        let mismatched: Vec<String> = expected
            .iter()
            .filter_map(|(name, var)| {
                let file = shapes.get(name)?;
                (file != &var.size())
                    .then(|| format!("{name}: file {file:?}, network {:?}", var.size()))
            })
            .collect();
        if !(missing.is_empty() && unexpected.is_empty() && mismatched.is_empty()) {
            return Err(Error::WeightsMismatch {
                path: self.path.clone(),
                missing,
                unexpected,
                mismatched,
            });
        }
        for (name, var) in expected {
            let src = self.tensor(name, var.device())?;
            let mut dst = var.shallow_clone();
            tch::no_grad(|| dst.f_copy_(&src))?;
        }
        Ok(())
    }
}

/// Little-endian fp32 bytes of `t` (any layout, any device).
pub(crate) fn f32_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let t = t
        .f_detach()?
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_contiguous()?;
    let numel = t.numel();
    let mut buf = vec![0u8; numel * 4];
    t.f_copy_data_u8(&mut buf, numel)?;
    Ok(buf)
}

/// Writes `tensors` (fp32) and `metadata` to `path` atomically ([`crate::atomic_file`]).
pub(crate) fn write_atomic(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let mut bytes = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let shape: Vec<usize> = t.size().iter().map(|&s| s as usize).collect();
        bytes.push((name.as_str(), shape, f32_bytes(t)?));
    }
    let views = bytes
        .iter()
        .map(|(name, shape, data)| {
            let view =
                TensorView::new(Dtype::F32, shape.clone(), data).map_err(|e| corrupt(path, e))?;
            Ok((*name, view))
        })
        .collect::<Result<Vec<_>>>()?;
    let serialized =
        safetensors::tensor::serialize(views, &Some(metadata)).map_err(|e| corrupt(path, e))?;
    crate::atomic_file::write_atomic(path, &serialized)
}
