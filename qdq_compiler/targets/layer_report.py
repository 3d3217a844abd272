"""Read the engine layer report TensorRT writes (`trtexec --exportLayerInfo`, IEngineInspector JSON) and
compare it with the fusion prediction.

Formats handled: {"Layers": [...], "Bindings": [...]} (TensorRT 10) and {"Layers": [...], "I/O Tensors":
[...]} (TensorRT 11); layers as dicts (`--profilingVerbosity=detailed`) or as plain name strings. Tensor
precision comes from "Format/Datatype" (10.x, e.g. "Row major linear INT8 format", "Channel major FP16
format (k = 8)", "Half") or the separate "DataType"/"Format" fields (11.x). A `--exportProfile` JSON can be
merged in for per-layer times.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdq_compiler.errors import QdqcError
from qdq_compiler.targets.fusion import FusionReport

# Checked in this order: the first pattern found in a format string names the precision.
_PRECISIONS = (
    ("INT8", re.compile(r"\bint8\b", re.I)),
    ("FP8", re.compile(r"\bfp8\b|float8|e4m3", re.I)),
    ("BF16", re.compile(r"\bbf16\b|bfloat16", re.I)),
    ("FP16", re.compile(r"\bfp16\b|\bhalf\b|float16", re.I)),
    ("INT32", re.compile(r"\bint32\b", re.I)),
    ("INT64", re.compile(r"\bint64\b", re.I)),
    ("BOOL", re.compile(r"\bbool\b", re.I)),
    ("FP32", re.compile(r"\bfp32\b|\bfloat\b|float32", re.I)),
)
_RANK = {"INT8": 0, "FP8": 1, "FP16": 2, "BF16": 3, "FP32": 4}  # compute precisions, lowest first
_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")
_QDQ_TYPES = {"Quantize", "Dequantize", "QuantizeLinear", "DequantizeLinear"}


class LayerReportError(QdqcError):
    """The file is not a TensorRT layer report."""


@dataclass
class EngineLayer:
    """One engine layer: its kernel precision, the ONNX ops fused into it, whether it is a reformat."""

    name: str
    layer_type: str
    precision: str  # INT8 | FP8 | FP16 | BF16 | FP32 | unknown
    input_precisions: list[str] = field(default_factory=list)
    output_precisions: list[str] = field(default_factory=list)
    fused: list[str] = field(default_factory=list)
    onnx_nodes: list[str] = field(default_factory=list)
    is_reformat: bool = False
    is_qdq: bool = False
    tactic: str | None = None
    origin: str | None = None
    avg_ms: float | None = None


@dataclass
class LayerReport:
    """All layers of one engine."""

    layers: list[EngineLayer]
    io_tensors: list[str]
    detailed: bool

    def count(self, precision: str) -> int:
        return sum(1 for layer in self.layers if layer.precision == precision and not layer.is_reformat)

    @property
    def reformats(self) -> list[EngineLayer]:
        return [layer for layer in self.layers if layer.is_reformat]


def precision_of(text: str | None) -> str:
    """INT8/FP8/BF16/FP16/INT32/INT64/BOOL/FP32 from a TensorRT format or datatype string; 'unknown' else."""
    if not text:
        return "unknown"
    for name, pattern in _PRECISIONS:
        if pattern.search(text):
            return name
    return "unknown"


def read_layer_report(
    source: str | Path | dict | list, profile: str | Path | list | None = None
) -> LayerReport:
    """Parse a layer report (path or already-loaded JSON); merge per-layer times from a profile if given."""
    data = _load(source)
    raw_layers: list[Any]
    io: list[Any]
    if isinstance(data, dict):
        found = data.get("Layers")
        if found is None:
            raise LayerReportError("no 'Layers' key: not a TensorRT layer report")
        if not isinstance(found, list):
            raise LayerReportError(f"'Layers' holds {type(found).__name__}, not a list of layers")
        raw_layers = found
        tensors = data.get("I/O Tensors", data.get("Bindings")) or []
        if not isinstance(tensors, list):
            raise LayerReportError(f"'I/O Tensors' holds {type(tensors).__name__}, not a list of tensors")
        io = tensors
    elif isinstance(data, list):
        raw_layers, io = data, []
    else:
        raise LayerReportError("expected a JSON object with 'Layers'")
    layers = [_layer(item) for item in raw_layers]
    io_names = [t.get("Name", "") if isinstance(t, dict) else str(t) for t in io]
    report = LayerReport(layers, io_names, detailed=any(isinstance(item, dict) for item in raw_layers))
    if profile is not None:
        _merge_profile(report, _load(profile))
    return report


def _load(source: str | Path | dict | list) -> Any:
    if isinstance(source, dict | list):
        return source
    path = Path(source)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise LayerReportError(f"layer report not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise LayerReportError(f"{path} is not JSON: {exc}") from None


def _layer(item: Any) -> EngineLayer:
    if not isinstance(item, dict):  # without detailed verbosity a layer is just its name
        name = str(item)
        reformat = "reformat" in name.lower()
        fused = [] if reformat else _fused_names(name)
        return EngineLayer(name, "", "unknown", fused=fused, is_reformat=reformat)
    name = str(item.get("Name", ""))
    layer_type = str(item.get("LayerType", ""))
    inputs = [_tensor_precision(t) for t in item.get("Inputs", []) if isinstance(t, dict)]
    outputs = [_tensor_precision(t) for t in item.get("Outputs", []) if isinstance(t, dict)]
    weights = item.get("Weights")
    weight_type = precision_of(weights.get("Type")) if isinstance(weights, dict) else "unknown"
    reformat = layer_type == "Reformat" or "reformat" in name.lower()
    return EngineLayer(
        name=name,
        layer_type=layer_type,
        precision=_compute_precision(weight_type, inputs, outputs),
        input_precisions=inputs,
        output_precisions=outputs,
        fused=[] if reformat else _fused_names(name),
        onnx_nodes=_ONNX_LAYER.findall(str(item.get("Metadata", ""))),
        is_reformat=reformat,
        is_qdq=layer_type in _QDQ_TYPES,
        tactic=item.get("TacticName") or item.get("TacticValue"),
        origin=str(item["Origin"]) if "Origin" in item else None,
    )


def _tensor_precision(tensor: dict) -> str:
    for key in ("DataType", "Format/Datatype", "Format"):
        found = precision_of(str(tensor.get(key, "")))
        if found != "unknown":
            return found
    return "unknown"


def _compute_precision(weight_type: str, inputs: list[str], outputs: list[str]) -> str:
    """Kernel precision: the weight type when listed, else the lowest input (then output) precision."""
    if weight_type in _RANK:
        return weight_type
    for side in (inputs, outputs):
        ranked = [p for p in side if p in _RANK]
        if ranked:
            return min(ranked, key=_RANK.__getitem__)
    return "unknown"


def _fused_names(name: str) -> list[str]:
    """ONNX node names in a fused layer name: 'a + b + PWN(c, d)' -> [a, b, c, d]."""
    parts = re.split(r"\s+\+\s+|,\s*|\(|\)", name)
    return [p.strip() for p in parts if p.strip() and not re.fullmatch(r"PWN\d*|PointWise\w*", p.strip())]


def _merge_profile(report: LayerReport, profile: Any) -> None:
    """Attach averageMs from a `trtexec --exportProfile` JSON (a list; the first item may be {"count": n})."""
    times = {str(e.get("name")): e.get("averageMs") for e in profile if isinstance(e, dict) and "name" in e}
    for layer in report.layers:
        value = times.get(layer.name)
        layer.avg_ms = float(value) if value is not None else None


def format_layer_report(report: LayerReport) -> str:
    """A table of the engine's layers with precision, reformat flag and time, then the counts."""
    detail = "detailed" if report.detailed else "names only"
    lines = [f"TensorRT engine layers ({len(report.layers)}; {detail})"]
    for layer in report.layers:
        kind = "REFORMAT" if layer.is_reformat else layer.layer_type or "-"
        time = f"{layer.avg_ms:.3f} ms" if layer.avg_ms is not None else ""
        name = layer.name if len(layer.name) <= 70 else layer.name[:67] + "..."
        lines.append(f"  {layer.precision:<7} {kind:<18} {name}  {time}".rstrip())
    counts = ", ".join(f"{p} {report.count(p)}" for p in ("INT8", "FP16", "FP32") if report.count(p))
    lines.append(
        f"Compute layers by precision: {counts or 'unknown'}; reformat layers: {len(report.reformats)}"
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Prediction vs. engine
# ----------------------------------------------------------------------------------------------------------


@dataclass
class ComparisonRow:
    """One weighted layer: predicted precision beside what the engine did."""

    layer: str
    op: str
    predicted: str  # 'int8' | 'float'
    engine_precision: str  # INT8 | FP16 | FP32 | ... | 'not found'
    engine_layer: str | None
    agree: bool | None  # None when the engine layer or its precision is unknown


@dataclass
class Comparison:
    """Side-by-side rows plus reformat counts (predicted standalone Q/DQ vs engine reformat layers)."""

    rows: list[ComparisonRow]
    predicted_reformats: int
    engine_reformats: int
    predicted_requantizations: int

    @property
    def disagreements(self) -> list[ComparisonRow]:
        return [row for row in self.rows if row.agree is False]


def compare_with_prediction(report: LayerReport, fusion_report: FusionReport) -> Comparison:
    """Match each predicted weighted layer to the engine layer that fused it (by ONNX node name)."""
    rows = []
    for layer in fusion_report.layers:
        engine = _find(report, layer.name)
        if engine is None:
            rows.append(ComparisonRow(layer.name, layer.op, layer.precision, "not found", None, None))
            continue
        agree = None
        if engine.precision in _RANK:
            agree = (engine.precision == "INT8") == (layer.precision == "int8")
        rows.append(
            ComparisonRow(layer.name, layer.op, layer.precision, engine.precision, engine.name, agree)
        )
    return Comparison(
        rows, len(fusion_report.reformats), len(report.reformats), len(fusion_report.requantizations)
    )


def _find(report: LayerReport, onnx_name: str) -> EngineLayer | None:
    for layer in report.layers:
        if not layer.is_reformat and (onnx_name in layer.onnx_nodes or onnx_name in layer.fused):
            return layer
    return None


def format_comparison(comparison: Comparison) -> str:
    """Predicted vs engine precision per weighted layer, then the reformat counts."""
    header = ("layer", "op", "predicted", "engine", "match", "engine layer")
    rows = [
        (
            r.layer,
            r.op,
            r.predicted,
            r.engine_precision,
            {True: "yes", False: "NO", None: "?"}[r.agree],
            r.engine_layer or "-",
        )
        for r in comparison.rows
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = ["Prediction vs engine"]
    for row in [header, *rows]:
        cells = "  ".join(str(c).ljust(w) for c, w in zip(row[:-1], widths, strict=True))
        lines.append(f"  {cells}  {row[-1]}")
    lines.append(
        f"Disagreements: {len(comparison.disagreements)}; reformat layers predicted "
        f"{comparison.predicted_reformats} "
        f"(+{comparison.predicted_requantizations} requantizations), "
        f"engine {comparison.engine_reformats}"
    )
    return "\n".join(lines)
