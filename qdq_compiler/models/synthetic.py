"""Large-but-cheap synthetic models (exact node counts) for IR load/sort/save benchmarks."""

from __future__ import annotations

import onnx

from qdq_compiler.models.builder import GraphBuilder

CHANNELS = 8
SPATIAL = 8
BLOCK_NODES = 5
# Slightly above the ReLU-critical He gain (sqrt 2): activations drift up rather than vanish, and the ReLU6
# (Clip 0..6) closing every block bounds them, so any depth stays O(1) for any input.
GAIN = 1.6


def _residual_block(b: GraphBuilder, x: str) -> str:
    """Conv-Relu-Conv + skip Add + ReLU6: fan-out of ``x`` and fan-in at the Add (5 nodes)."""
    y = b.conv(x, CHANNELS, 3, 1, name="conv1", gain=GAIN)
    y = b.relu(y, name="relu")
    y = b.conv(y, CHANNELS, 3, 1, name="conv2", gain=GAIN)
    y = b.add(y, x, name="add")
    return b.clip(y, 0.0, 6.0, name="relu6")


def _split_block(b: GraphBuilder, x: str) -> str:
    """1x1 and 3x3 branches to half width, Concat, 1x1 conv, ReLU6 (5 nodes)."""
    half = CHANNELS // 2
    p = b.conv(x, half, 1, 1, name="branch1x1", gain=GAIN)
    q = b.conv(x, half, 3, 1, name="branch3x3", gain=GAIN)
    y = b.concat([p, q], axis=1, name="concat")
    y = b.conv(y, CHANNELS, 1, 1, name="fuse", gain=GAIN)
    return b.clip(y, 0.0, 6.0, name="relu6")


def build_chain_model(num_nodes: int, seed: int = 0) -> onnx.ModelProto:
    """A model with exactly ``num_nodes`` nodes of small 8-channel 8x8 convolutions.

    Alternates residual blocks and split/concat blocks (5 nodes each, every block closed by a ReLU6 so
    activations stay bounded at any depth) so the graph has fan-out and fan-in, then pads with Relu
    nodes to hit the requested count. Input ``input`` and output ``output`` are float32 ``[1, 8, 8, 8]``.
    """
    if num_nodes < 1:
        raise ValueError("num_nodes must be >= 1")
    b = GraphBuilder("chain", seed=seed, probe=False)
    x = b.add_input("input", (1, CHANNELS, SPATIAL, SPATIAL))
    num_blocks, rest = divmod(num_nodes, BLOCK_NODES)
    for i in range(num_blocks):
        with b.scope(f"block.{i}"):
            x = _residual_block(b, x) if i % 2 == 0 else _split_block(b, x)
    for j in range(rest):
        x = b.relu(x, name=f"tail.{j}.relu")
    b.add_output(b.rename_tensor(x, "output"))
    return b.build()


# --------------------------------------------------------------------------------------------------
# Scale-benchmark shapes (bench/bench_ir.py): tiny tensors, many nodes, exact node counts
# --------------------------------------------------------------------------------------------------
SCALE_SHAPES = ("chain", "ladder", "fanin")
SCALE_CHANNELS = 4
SCALE_SPATIAL = 4
FANIN_WIDTH = 8  # branches per Concat in the fan-in shape
SCALE_GAIN = 0.5  # below the ReLU He gain: the ladder's skip sums grow slowly with depth


def _chain_block(b: GraphBuilder, x: str) -> str:
    """Conv 3x3 + Relu (2 nodes), He gain so activations neither vanish nor explode with depth."""
    return b.relu(b.conv(x, SCALE_CHANNELS, 3, 1, name="conv", gain=GAIN), name="relu")


def _ladder_block(b: GraphBuilder, x: str) -> str:
    """Conv 3x3 + Relu, then Add with the block's input: a residual skip at every rung (3 nodes)."""
    y = b.relu(b.conv(x, SCALE_CHANNELS, 3, 1, name="conv", gain=SCALE_GAIN), name="relu")
    return b.add(y, x, name="add")


def _fanin_block(b: GraphBuilder, x: str) -> str:
    """FANIN_WIDTH 1x1 convs of one channel each, one Concat of all, a 1x1 conv back, Relu (WIDTH + 3)."""
    branches = [b.conv(x, 1, 1, 1, name=f"branch{i}", gain=SCALE_GAIN) for i in range(FANIN_WIDTH)]
    y = b.concat(branches, axis=1, name="concat")
    return b.relu(b.conv(y, SCALE_CHANNELS, 1, 1, name="fuse", gain=SCALE_GAIN), name="relu")


_SCALE_BLOCKS = {
    "chain": (_chain_block, 2),
    "ladder": (_ladder_block, 3),
    "fanin": (_fanin_block, FANIN_WIDTH + 3),
}


def build_scale_model(shape: str, num_nodes: int, seed: int = 0) -> onnx.ModelProto:
    """A model of exactly ``num_nodes`` nodes in one of :data:`SCALE_SHAPES`, on ``[1, 4, 4, 4]`` tensors.

    ``chain``: Conv/Relu pairs. ``ladder``: Conv/Relu/Add rungs, each Add taking the rung's input as a
    skip (fan-out 2, fan-in 2 everywhere). ``fanin``: 8 one-channel 1x1 convs of the same tensor into
    one Concat, a 1x1 conv and Relu. Relu nodes pad to the exact count. Input ``input``, output ``output``.
    Weights are random (seeded), so the graph is for timing and validity, not for accuracy.
    """
    if shape not in _SCALE_BLOCKS:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SCALE_SHAPES)}")
    if num_nodes < 1:
        raise ValueError("num_nodes must be >= 1")
    block, size = _SCALE_BLOCKS[shape]
    b = GraphBuilder(shape, seed=seed, probe=False)
    x = b.add_input("input", (1, SCALE_CHANNELS, SCALE_SPATIAL, SCALE_SPATIAL))
    num_blocks, rest = divmod(num_nodes, size)
    for i in range(num_blocks):
        with b.scope(f"block.{i}"):
            x = block(b, x)
    for j in range(rest):
        x = b.relu(x, name=f"tail.{j}.relu")
    b.add_output(b.rename_tensor(x, "output"))
    return b.build()
