"""Exporters: ONNX (proved against PyTorch), TVM, TensorRT."""
