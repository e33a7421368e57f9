"""Neural backbones. Submodules import transformers; this package file does not."""
