//! GradCAM (placeholder)
