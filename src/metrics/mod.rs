//! Evaluation metrics: image/pixel AUROC, AUPRO, F1-max.
