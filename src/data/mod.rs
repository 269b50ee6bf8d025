//! Image loading, datasets (MVTec layout, plain folders), masks and the embedded synthetic dataset.
