"""Which task a model solves (detector, segmentation, classifier) and which output carries it."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from qdq_compiler.errors import QdqcError

KINDS = ("detector", "segmentation", "classifier")
MODEL_KIND_KEY = "qdq_compiler.model_kind"
"""metadata_props key a bundled model uses to say what it is (one of :data:`KINDS`)."""

SHAPE_RULES = {
    "detector": "[B,N,5+nc]",
    "classifier": "[B,C]",
    "segmentation": "[B,1,H,W]",
}


def fits_kind(kind: str, shape: tuple[int, ...]) -> bool:
    """True when an output of ``shape`` can carry ``kind``'s result (see :data:`SHAPE_RULES`)."""
    if kind == "detector":  # N rows of boxes, more than their 5 + nc columns (not YOLOv8's [B,4+nc,N])
        return len(shape) == 3 and shape[2] >= 6 and shape[1] >= shape[2]
    if kind == "classifier":
        return len(shape) == 2 and shape[1] >= 2
    return len(shape) == 4 and shape[1] == 1


def kind_from_metadata(*models: onnx.ModelProto) -> str | None:
    """The first model's recorded kind (:data:`MODEL_KIND_KEY`), if any; an unknown value is refused."""
    for model in models:
        props = {prop.key: prop.value for prop in model.metadata_props}
        if MODEL_KIND_KEY in props:
            kind = props[MODEL_KIND_KEY]
            if kind not in KINDS:
                raise QdqcError(
                    f"the model's metadata {MODEL_KIND_KEY}={kind!r} is not one of {', '.join(KINDS)}: "
                    "give --kind"
                )
            return kind
    return None


def kind_from_outputs(outputs: Mapping[str, np.ndarray]) -> str:
    """The one kind the output shapes fit; refused (asking for --kind) when none or several do."""
    fitting = sorted({kind for kind in KINDS for out in outputs.values() if fits_kind(kind, out.shape)})
    if len(fitting) != 1:
        shapes = ", ".join(f"{name} {list(out.shape)}" for name, out in outputs.items())
        found = f"they fit {' and '.join(fitting)}" if fitting else "none fits"
        rules = ", ".join(f"{kind} {rule}" for kind, rule in SHAPE_RULES.items())
        raise QdqcError(
            f"cannot tell the model's kind from its outputs ({shapes}; {found} of {rules}): give --kind"
        )
    return fitting[0]


def task_output(kind: str, outputs: Mapping[str, np.ndarray]) -> str:
    """The name of the first output whose shape fits ``kind``."""
    for name, out in outputs.items():
        if fits_kind(kind, out.shape):
            return name
    shapes = ", ".join(f"{name} {list(out.shape)}" for name, out in outputs.items())
    raise QdqcError(f"--kind {kind} needs an output of shape {SHAPE_RULES[kind]}; the model has {shapes}")
