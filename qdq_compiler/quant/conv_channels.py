"""Input channels of a grouped Conv weight [O, I/group, kh, kw]: their ranges, and scaling them.

What channel equalisation reads and edits on the conv that consumes a rescaled tensor (passes `equalize`
and `equalize-channels`).
"""

from __future__ import annotations

import numpy as np


def input_channel_ranges(weight: np.ndarray, group: int) -> np.ndarray:
    """max |w| over everything that reads input channel i, for a grouped Conv weight [O, I/group, kh, kw]."""
    out_channels, per_group_in = weight.shape[0], weight.shape[1]
    per_group_out = out_channels // group
    grouped = np.abs(weight).reshape(group, per_group_out, per_group_in, -1)
    return grouped.max(axis=(1, 3)).reshape(group * per_group_in)


def scale_input_channels(weight: np.ndarray, group: int, scale: np.ndarray) -> np.ndarray:
    """Multiply every weight that reads input channel i by scale[i] (in the promoted type of the two)."""
    out_channels, per_group_in = weight.shape[0], weight.shape[1]
    per_group_out = out_channels // group
    grouped = weight.reshape(group, per_group_out, per_group_in, *weight.shape[2:])
    factors = scale.reshape(group, 1, per_group_in, *([1] * (weight.ndim - 2)))
    return (grouped * factors).reshape(weight.shape)
