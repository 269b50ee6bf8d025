//! CutPaste augmentations (paper Appendix A.2): CutPaste, Scar, label sets, Cutout and Rotation baselines.
