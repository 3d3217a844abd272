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


def check_shapes_for_model(
    shapes: list[InputShape], inputs: dict[str, tuple[int | None, ...] | None]
) -> None:
    """Check parsed --shapes against the model's inputs (name -> dims, None for a dynamic dimension, None
    for an unknown rank): every name is an input, ranks match, fixed dimensions are given as they are, and
    every input with a dynamic dimension gets a shape. Raise ShapeSpecError naming the first mismatch."""
    for shape in shapes:
        if shape.name not in inputs:
            names = ", ".join(inputs)
            raise ShapeSpecError(f"--shapes: the model has no input '{shape.name}' (inputs: {names})")
        dims = inputs[shape.name]
        if dims is None:
            continue
        if len(dims) != len(shape.min):
            raise ShapeSpecError(
                f"--shapes: input '{shape.name}' has rank {len(dims)}, --shapes gives {len(shape.min)} "
                "dimensions"
            )
        for axis, (fixed, low, high) in enumerate(zip(dims, shape.min, shape.max, strict=True)):
            if fixed is not None and (low, high) != (fixed, fixed):
                given = str(low) if low == high else f"{low}..{high}"
                raise ShapeSpecError(
                    f"--shapes: dimension {axis} of '{shape.name}' is fixed at {fixed} in the model, "
                    f"--shapes gives {given}"
                )
    given_names = {shape.name for shape in shapes}
    missing = [
        name for name, dims in inputs.items() if dims is not None and None in dims and name not in given_names
    ]
    if missing:
        examples = ",".join(f"{name}:{_example(inputs[name])}" for name in missing)
        raise ShapeSpecError(
            f"dynamic input(s) need --shapes: {', '.join(missing)} (e.g. --shapes {examples}; "
            "each dimension N, MIN..MAX or MIN..OPT..MAX)"
        )


def _example(dims: tuple[int | None, ...] | None) -> str:
    """A shape spec for dims, dynamic batch as 1..8 and other dynamic dimensions as MIN..MAX."""
    parts = []
    for axis, dim in enumerate(dims or ()):
        parts.append(str(dim) if dim is not None else "1..8" if axis == 0 else "MIN..MAX")
    return "x".join(parts)
