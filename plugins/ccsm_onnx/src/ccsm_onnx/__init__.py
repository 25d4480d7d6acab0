"""ONNX weights for ccsm: the initializers of a Llama-family text model exported by torch.onnx or
optimum, named as transformers names them (recovered from the graph where the exporter renamed
them), run and converted through ccsm's transformers text path."""
