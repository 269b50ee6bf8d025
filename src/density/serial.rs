//! Fitted densities as plain named arrays plus a JSON-able record, so that checkpoints can store
//! them (e.g. as safetensors tensors + metadata) without this module knowing the file format.
//!
//! | kind | arrays |
//! |---|---|
//! | Gaussian | `mean` f64 \[d\], `covariance` f64 \[d, d\] (the factorisation is recomputed on load) |
//! | KDE | `train_features` f32 \[n, d\] (already L2-normalised) |
use super::{Density, FittedDensity, FittedGaussian, FittedKde, GaussianParams, KdeParams};
use crate::{Error, Result};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

/// Element data of a [`NamedArray`], row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum ArrayData {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 64-bit floats.
    F64(Vec<f64>),
}

impl ArrayData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            ArrayData::F32(v) => v.len(),
            ArrayData::F64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A named, shaped, row-major array.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedArray {
    /// Name, e.g. `"covariance"`.
    pub name: String,
    /// Shape, outermost dimension first.
    pub shape: Vec<usize>,
    /// Elements, row-major; `shape.iter().product()` of them.
    pub data: ArrayData,
}

/// The non-array part of a fitted density: serialisable with serde (JSON metadata).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DensityRecord {
    /// A fitted Gaussian.
    Gaussian {
        /// Its parameters.
        params: GaussianParams,
        /// Feature dimension.
        dim: usize,
        /// Number of training samples.
        n_train: usize,
        /// Ledoit–Wolf shrinkage, if used.
        shrinkage: Option<f64>,
    },
    /// A fitted KDE.
    Kde {
        /// Its parameters.
        params: KdeParams,
        /// Feature dimension.
        dim: usize,
        /// Number of training samples.
        n_train: usize,
        /// The resolved γ.
        gamma: f64,
    },
}

impl DensityRecord {
    /// The parameters the density was fitted with.
    pub fn params(&self) -> Density {
        match self {
            DensityRecord::Gaussian { params, .. } => Density::Gaussian(params.clone()),
            DensityRecord::Kde { params, .. } => Density::Kde(params.clone()),
        }
    }
}

impl FittedDensity {
    /// The JSON-able description that goes with [`to_arrays`](Self::to_arrays). A
    /// user-defined density has none: [`Error::Unsupported`] (checkpoints store the provided
    /// densities only).
    pub fn record(&self) -> Result<DensityRecord> {
        Ok(match self {
            FittedDensity::Custom(c) => return Err(c.unsaveable()),
            FittedDensity::Gaussian(g) => DensityRecord::Gaussian {
                params: g.params().clone(),
                dim: g.dim(),
                n_train: g.n_train(),
                shrinkage: g.shrinkage(),
            },
            FittedDensity::Kde(k) => DensityRecord::Kde {
                params: k.params().clone(),
                dim: k.dim(),
                n_train: k.n_train(),
                gamma: k.gamma(),
            },
        })
    }

    /// The fitted state as named row-major arrays (see the module docs for names and dtypes);
    /// [`Error::Unsupported`] for a user-defined density, as [`record`](Self::record).
    pub fn to_arrays(&self) -> Result<Vec<NamedArray>> {
        Ok(match self {
            FittedDensity::Custom(c) => return Err(c.unsaveable()),
            FittedDensity::Gaussian(g) => vec![
                NamedArray {
                    name: "mean".into(),
                    shape: vec![g.dim()],
                    data: ArrayData::F64(g.mean().to_vec()),
                },
                NamedArray {
                    name: "covariance".into(),
                    shape: vec![g.dim(), g.dim()],
                    data: ArrayData::F64(g.covariance().iter().copied().collect()),
                },
            ],
            FittedDensity::Kde(k) => vec![NamedArray {
                name: "train_features".into(),
                shape: vec![k.n_train(), k.dim()],
                data: ArrayData::F32(k.train_features().iter().copied().collect()),
            }],
        })
    }

    /// Rebuilds a fitted density from [`record`](Self::record) and
    /// [`to_arrays`](Self::to_arrays) output. Scores are bit-identical to the original's.
    ///
    /// Errors: a missing array or wrong dtype → [`Error::InvalidInput`]; shapes that disagree
    /// with the record → [`Error::DimensionMismatch`]; bad values as in
    /// [`FittedGaussian::from_parts`] / [`FittedKde::from_parts`].
    pub fn from_arrays(record: &DensityRecord, arrays: &[NamedArray]) -> Result<Self> {
        match record {
            DensityRecord::Gaussian {
                params,
                dim,
                n_train,
                shrinkage,
            } => {
                let mean = find_f64(arrays, "mean", &[*dim])?;
                let cov = find_f64(arrays, "covariance", &[*dim, *dim])?;
                let mean = Array1::from_vec(mean);
                let cov = Array2::from_shape_vec((*dim, *dim), cov)
                    .map_err(|e| Error::internal(format!("shape of `covariance`: {e}")))?;
                let g =
                    FittedGaussian::from_parts(params.clone(), mean, cov, *shrinkage, *n_train)?;
                Ok(FittedDensity::Gaussian(g))
            }
            DensityRecord::Kde {
                params,
                dim,
                n_train,
                gamma,
            } => {
                let a = find(arrays, "train_features", &[*n_train, *dim])?;
                let ArrayData::F32(v) = &a.data else {
                    return Err(wrong_dtype("train_features", "f32"));
                };
                let train = Array2::from_shape_vec((*n_train, *dim), v.clone())
                    .map_err(|e| Error::internal(format!("shape of `train_features`: {e}")))?;
                Ok(FittedDensity::Kde(FittedKde::from_parts(
                    params.clone(),
                    train,
                    *gamma,
                )?))
            }
        }
    }
}

fn wrong_dtype(name: &str, want: &str) -> Error {
    Error::invalid_input(
        name,
        format!("array `{name}` must hold {want} values; the checkpoint is corrupt or foreign"),
    )
}

fn find<'a>(arrays: &'a [NamedArray], name: &str, shape: &[usize]) -> Result<&'a NamedArray> {
    let a = arrays.iter().find(|a| a.name == name).ok_or_else(|| {
        Error::invalid_input(
            name,
            format!("array `{name}` is missing; the checkpoint is incomplete (re-save it)"),
        )
    })?;
    if a.shape.len() != shape.len() {
        return Err(Error::DimensionMismatch {
            what: format!("number of dimensions of array `{name}`"),
            expected: shape.len(),
            got: a.shape.len(),
        });
    }
    for (axis, (&want, &got)) in shape.iter().zip(&a.shape).enumerate() {
        if want != got {
            return Err(Error::DimensionMismatch {
                what: format!("axis {axis} of array `{name}` (from the record)"),
                expected: want,
                got,
            });
        }
    }
    let expected: usize = shape.iter().product();
    if a.data.len() != expected {
        return Err(Error::DimensionMismatch {
            what: format!("number of elements of array `{name}`"),
            expected,
            got: a.data.len(),
        });
    }
    Ok(a)
}

fn find_f64(arrays: &[NamedArray], name: &str, shape: &[usize]) -> Result<Vec<f64>> {
    match &find(arrays, name, shape)?.data {
        ArrayData::F64(v) => Ok(v.clone()),
        ArrayData::F32(_) => Err(wrong_dtype(name, "f64")),
    }
}
