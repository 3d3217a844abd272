"""Per-channel weight amax."""

from __future__ import annotations

import numpy as np
import pytest

from qdq_compiler.calib.histogram import TensorStats
from qdq_compiler.calib.methods import compute_amax
from qdq_compiler.calib.weights import per_channel_amax


def test_per_channel_max_by_hand():
    weight = np.array(
        [
            [[[1.0, -4.0]], [[0.5, 2.0]]],  # channel 0: |w| max 4
            [[[0.0, 0.0]], [[0.0, 0.0]]],  # channel 1: all zero -> median of the others
            [[[-0.25, 0.1]], [[0.2, 0.0]]],
        ],  # channel 2: 0.25
        dtype=np.float32,
    )  # Conv weight [3, 2, 1, 2]
    np.testing.assert_array_equal(per_channel_amax(weight, 0), [4.0, (4.0 + 0.25) / 2, 0.25])
    # axis 1 (as for ConvTranspose): slices [:, 0] -> max(1, 4, 0, .25, .1) = 4; [:, 1] -> 2
    np.testing.assert_array_equal(per_channel_amax(weight, 1), [4.0, 2.0])
    assert per_channel_amax(weight, None) == 4.0
    assert per_channel_amax(weight, None).shape == ()


@pytest.mark.parametrize("method", ["percentile{p=99}", "mse", "entropy"])
def test_per_channel_histogram_methods(method):
    rng = np.random.default_rng(0)
    gains = np.array([1, 0.1, 5, 0], dtype=np.float32)[:, None, None, None]
    weight = rng.standard_normal((4, 8, 3, 3)).astype(np.float32) * gains
    amax = per_channel_amax(weight, 0, method)
    assert amax.shape == (4,) and amax[3] == np.median(amax[:3])  # the all-zero channel
    for channel in range(3):
        values = np.abs(weight[channel].astype(np.float64)).ravel()
        peak = values.max()
        # one-shot histogram over [0, channel absmax], as pytorch-quantization builds for weights
        counts, _ = np.histogram(values, bins=2048, range=(0, peak))
        stats = TensorStats.from_histogram(
            counts, peak, min_value=float(weight[channel].min()), max_value=float(weight[channel].max())
        )
        assert amax[channel] == compute_amax(stats, method)
        assert 0 < amax[channel] <= peak


def test_per_channel_errors():
    with pytest.raises(ValueError, match="NaN"):
        per_channel_amax(np.array([[np.nan, 1.0]]), 0)
    with pytest.raises(ValueError, match="out of range"):
        per_channel_amax(np.ones((2, 2)), 2)
