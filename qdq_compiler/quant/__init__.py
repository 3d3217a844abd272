"""Quantization bookkeeping shared by passes and reports (decisions per layer, scale groups)."""
