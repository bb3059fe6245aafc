"""Export of trained runs to SavedModel and ONNX bundles (see the export issue)."""
