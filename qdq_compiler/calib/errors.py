"""Exceptions raised by the calibration engine; every message is a single line."""

from __future__ import annotations

from qdq_compiler.errors import QdqcError

__all__ = ["CalibrationCacheError", "CalibrationDataError", "CalibrationError", "CalibrationMethodError"]


class CalibrationError(QdqcError, ValueError):
    """Base class of calibration errors (user errors: the CLI prints them as one line)."""


class CalibrationDataError(CalibrationError):
    """Calibration data is missing, empty, or does not fit the model's inputs."""


class CalibrationMethodError(CalibrationError):
    """A calibration method spec is malformed, unknown, or cannot be applied to the statistics."""


class CalibrationCacheError(CalibrationError):
    """A calibration cache file is unreadable, of another format version, or stale for the requested key."""
