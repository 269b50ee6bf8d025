//! ResNet-18 backbone, MLP head, classifier and the self-supervised training loop (libtorch).
