//! Image loading, datasets (MVTec layout, plain folders), masks, image↔tensor conversion and the
//! embedded synthetic dataset.
//!
//! Everything except [`tensor`]'s tensor functions works without libtorch.
mod dataset;
pub mod image_io;
pub mod synthetic;
pub mod tensor;

pub use dataset::{
    collect_images, load_all, load_all_native, load_all_with, Dataset, FolderDataset,
    MvtecCategory, MvtecOptions, Sample, GOOD,
};
pub use image_io::{
    load_mask, load_rgb, load_rgb_resized, resize_mask, resize_rgb, DEFAULT_SIDE, RESIZE_FILTER,
};
pub use tensor::{images_to_nchw, images_to_tensor, tensor_to_image, Normalization};
