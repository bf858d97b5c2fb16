"""Ranker server: candidates -> LLaRA++ scores -> the response (ONNX, PyTorch fallback)."""
