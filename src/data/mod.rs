//! Image loading, datasets (MVTec layout, plain folders), masks and the embedded synthetic dataset.
pub mod tensor;

pub use tensor::{images_to_nchw, images_to_tensor, tensor_to_image, Normalization};
