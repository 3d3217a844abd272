"""qdq_compiler: place, calibrate and fold Q/DQ nodes so TensorRT runs a CNN in INT8."""

__version__ = "0.1.0"
