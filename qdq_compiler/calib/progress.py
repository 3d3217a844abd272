"""A minimal progress line on stderr: done/total, samples per second, ETA. Silent unless stderr is a TTY."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Progress of a loop over samples; use as a context manager, call :meth:`update` per batch.

    Drawn on ``stream`` (stderr by default) at most every ``min_interval`` seconds, and only when ``quiet``
    is false and the stream is a terminal (``force=True`` draws anyway, e.g. for tests).
    """

    def __init__(
        self,
        total: int | None = None,
        *,
        desc: str = "calibrating",
        unit: str = "samples",
        stream: TextIO | None = None,
        quiet: bool = False,
        force: bool = False,
        min_interval: float = 0.1,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = not quiet and (force or bool(isatty and isatty()))
        self.min_interval = min_interval
        self.done = 0
        self._start = time.monotonic()
        self._last_draw = -float("inf")
        self._width = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, count: int = 1) -> None:
        """Record ``count`` more samples done."""
        self.done += count
        now = time.monotonic()
        if self.enabled and now - self._last_draw >= self.min_interval:
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        """The current progress text."""
        elapsed = max((time.monotonic() if now is None else now) - self._start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            text = f"{self.desc} {self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%)"
            remaining = (self.total - self.done) / rate if rate > 0 else float("inf")
            eta = _clock(remaining) if remaining != float("inf") else "?"
            return f"{text}  {rate:.1f} {self.unit}/s  ETA {eta}"
        return f"{self.desc} {self.done} {self.unit}  {rate:.1f} {self.unit}/s  {_clock(elapsed)}"

    def _draw(self, now: float) -> None:
        text = self.line(now)
        padding = " " * max(self._width - len(text), 0)
        self.stream.write("\r" + text + padding)
        self.stream.flush()
        self._width = len(text)
        self._last_draw = now

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False
