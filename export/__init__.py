"""Export of trained runs: self-checking ONNX bundles with the one-file translators, and SavedModels."""
