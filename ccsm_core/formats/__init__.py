"""Weight file formats: lazy tensors (`tensor.TensorData`) from safetensors and GGUF files."""
