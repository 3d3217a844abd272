"""Input-shape specs for engine builds, shared by the trtexec command builder and the Python build path.

Grammar: `name:DxDxD[,name:DxD...]` where each dimension D is `N` (static), `MIN..MAX` (opt = max) or
`MIN..OPT..MAX`. Example: `images:1..8x3x640x640` builds a dynamic-batch profile 1/8/8.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from qdq_compiler.errors import QdqcError

_DIM = re.compile(r"^(\d+)(?:\.\.(\d+))?(?:\.\.(\d+))?$")


class ShapeSpecError(QdqcError):
    """A --shapes text does not follow `name:DxD...` with D = N, MIN..MAX or MIN..OPT..MAX."""


@dataclass(frozen=True)
class InputShape:
    """Min/opt/max shapes of one network input (all equal for a static input)."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @property
    def is_dynamic(self) -> bool:
        return self.min != self.max

    @staticmethod
    def text(dims: tuple[int, ...]) -> str:
        """trtexec's `AxBxC` spelling of a shape."""
        return "x".join(str(d) for d in dims)


def parse_shape_spec(spec: str) -> list[InputShape]:
    """Parse a shape spec; raise ShapeSpecError naming the bad part."""
    shapes: list[InputShape] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, dims_text = part.rpartition(":")
        if not sep or not name:
            raise ShapeSpecError(f"shape spec '{part}' needs 'name:dims' (e.g. images:1x3x640x640)")
        lows, opts, highs = [], [], []
        for dim in dims_text.split("x"):
            match = _DIM.match(dim.strip())
            if match is None:
                raise ShapeSpecError(f"bad dimension '{dim}' in '{part}' (use N, MIN..MAX or MIN..OPT..MAX)")
            first = int(match.group(1))
            second, third = (int(g) if g else None for g in match.group(2, 3))
            if second is None:
                low = opt = high = first
            elif third is None:
                low, opt, high = first, second, second
            else:
                low, opt, high = first, second, third
            if not 0 < low <= opt <= high:
                raise ShapeSpecError(f"dimension '{dim}' in '{part}' must satisfy 0 < min <= opt <= max")
            lows.append(low)
            opts.append(opt)
            highs.append(high)
        shapes.append(InputShape(name, tuple(lows), tuple(opts), tuple(highs)))
    if not shapes:
        raise ShapeSpecError("empty shape spec")
    return shapes
