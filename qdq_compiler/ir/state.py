"""State one pass leaves for a later one, kept in the model so it survives save and load.

Model-wide state (layer decisions, imported ranges) is JSON in the model's ``metadata_props`` under
``qdq_compiler.<key>``; state of one tensor (its calibrated amax) is JSON in that value's
``metadata_props``, which ONNX serializes in the graph's input, output and value_info entries (onnx.checker
and onnxruntime accept them at every IR version). The JSON is deterministic: sorted keys, no spaces,
floats in Python's shortest round-trip form, no NaN or Infinity. Passes call these functions and never
handle JSON themselves; what each key holds is documented where it is written (docs/pipelines.md lists them).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx_ir as ir

from qdq_compiler.errors import QdqcError

STATE_PREFIX = "qdq_compiler."


def state_key(key: str) -> str:
    """The metadata key of state ``key``: ``qdq_compiler.<key>``."""
    return STATE_PREFIX + key


def encode_state(data: Any) -> str:
    """``data`` as deterministic JSON text (raises ValueError for NaN or infinite numbers)."""
    return json.dumps(_plain(data), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _plain(data: Any) -> Any:
    """numpy numbers and tuples as the Python numbers and lists JSON writes."""
    if isinstance(data, np.generic):
        return data.item()
    if isinstance(data, dict):
        return {str(key): _plain(item) for key, item in data.items()}
    if isinstance(data, (list, tuple)):
        return [_plain(item) for item in data]
    return data


def _decode(text: str, key: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise QdqcError(
            f"{where}: metadata {key!r} is not valid qdqc state ({exc}); re-run the pipeline "
            "from the model it came from"
        ) from None


def model_state(model: ir.Model, key: str) -> Any | None:
    """The model-wide state ``key`` (None when absent)."""
    name = state_key(key)
    text = model.metadata_props.get(name)
    return None if text is None else _decode(text, name, "the model")


def set_model_state(model: ir.Model, key: str, data: Any | None) -> None:
    """Store model-wide state ``key`` (None removes it)."""
    name = state_key(key)
    if data is None:
        model.metadata_props.pop(name, None)
    else:
        model.metadata_props[name] = encode_state(data)


def value_state(value: ir.Value, key: str) -> Any | None:
    """The state ``key`` of one tensor (None when absent)."""
    name = state_key(key)
    text = value.metadata_props.get(name)
    return None if text is None else _decode(text, name, f"tensor {value.name!r}")


def set_value_state(value: ir.Value, key: str, data: Any | None) -> None:
    """Store state ``key`` on one tensor (None removes it)."""
    name = state_key(key)
    if data is None:
        value.metadata_props.pop(name, None)
    else:
        value.metadata_props[name] = encode_state(data)


def clear_value_state(graph: ir.Graph, key: str) -> None:
    """Remove state ``key`` from every tensor of ``graph`` (inputs, initializers, node outputs)."""
    name = state_key(key)
    values = [*graph.inputs, *graph.initializers.values(), *(v for node in graph for v in node.outputs)]
    for value in values:
        value.metadata_props.pop(name, None)


def summarize_state(text: str) -> str | None:
    """``"N entries"`` for state holding a JSON list or object (too long for one line), else None."""
    if text[:1] not in "[{":
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return f"{len(data)} entries" if isinstance(data, (list, dict)) else None
