"""Calibration engine: data readers, streaming statistics, amax methods, weight amax and the cache.

The ``calibrate`` pass and the CLI build on these functions; nothing here touches the IR.
"""

from __future__ import annotations

from .cache import CacheKey, cache_key, load_cache, model_sha256, read_cache_key, save_cache
from .collect import collect_statistics
from .data import (
    ArrayData,
    CalibrationData,
    ImageFolderData,
    InputSpec,
    IterableData,
    NpyData,
    NpzData,
    model_input_specs,
    open_calibration_data,
    validate_batch,
)
from .errors import CalibrationCacheError, CalibrationDataError, CalibrationError, CalibrationMethodError
from .histogram import DEFAULT_NUM_BINS, TensorStats, collect_exact
from .methods import (
    AMAX_FLOOR,
    MethodPlan,
    MethodSpec,
    available_methods,
    compute_amax,
    parse_method_spec,
    parse_override,
    register_method,
)
from .preprocess import Preprocess
from .progress import Progress
from .weights import per_channel_amax

__all__ = [
    "AMAX_FLOOR",
    "DEFAULT_NUM_BINS",
    "ArrayData",
    "CacheKey",
    "CalibrationCacheError",
    "CalibrationData",
    "CalibrationDataError",
    "CalibrationError",
    "CalibrationMethodError",
    "ImageFolderData",
    "InputSpec",
    "IterableData",
    "MethodPlan",
    "MethodSpec",
    "NpyData",
    "NpzData",
    "Preprocess",
    "Progress",
    "TensorStats",
    "available_methods",
    "cache_key",
    "collect_exact",
    "collect_statistics",
    "compute_amax",
    "load_cache",
    "model_input_specs",
    "model_sha256",
    "open_calibration_data",
    "parse_method_spec",
    "parse_override",
    "per_channel_amax",
    "read_cache_key",
    "register_method",
    "save_cache",
    "validate_batch",
]
