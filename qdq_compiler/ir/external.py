"""Large models: sizes, weightless copies, onnxruntime sessions and hashes that never serialize them whole.

A ModelProto over 2 GiB cannot be serialized (``SerializeToString`` and ``ByteSize`` raise), so nothing
may hand such a model to onnxruntime, shape inference or a hash as one byte string. Below that limit it
could, but every whole serialization costs another copy of the weights (a 1.5 GB model serialized for
onnxruntime is held as the proto, its bytes and onnxruntime's copy). So every model past
:data:`LARGE_MODEL_BYTES` (256 MiB) takes the piecewise paths:

* :func:`proto_is_large` / :func:`model_is_large`: whether a proto / an IR model is past that size;
* :func:`write_with_external_data`: write a proto as ``model.onnx`` + one data file, tensor by tensor,
  without modifying the proto or holding a second copy of its weights;
* :func:`inference_session`: an onnxruntime session from bytes (small) or from such files in a temporary
  folder (large);
* :func:`weightless_proto` / :func:`proto_for_tools`: an IR model's proto with its large tensors left out
  (external references to a file that does not exist), for shape inference, the checker and the version
  converter, which never read weights; :func:`proto_for_inference`, the leaner one shape inference needs;
* :func:`serialized_chunks`: a message's deterministic serialization as a sequence of pieces, equal to
  ``SerializeToString(deterministic=True)`` when joined, for hashing a model of any size.

Tests lower :data:`LARGE_MODEL_BYTES` so that tiny models take the large-model paths.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir
from google.protobuf.message import EncodeError, Message
from onnx_ir import serde

__all__ = [
    "LARGE_MODEL_BYTES",
    "check_model",
    "copy_without_initializers",
    "inference_session",
    "model_is_large",
    "proto_for_inference",
    "proto_for_tools",
    "proto_is_large",
    "put_weights_back",
    "serialized_chunks",
    "weightless_proto",
    "weights_nbytes",
    "write_with_external_data",
]

# Past this size a model is never serialized whole (protobuf's own limit is 2 GiB - 1)
LARGE_MODEL_BYTES = 256 * 2**20
# tensors up to this size stay inline when a model is split into a file and its external data
INLINE_TENSOR_MAX_BYTES = 1024
_PLACEHOLDER_LOCATION = "qdqc-weights-left-out.data"


def proto_is_large(proto: Message) -> bool:
    """True if ``proto`` is past :data:`LARGE_MODEL_BYTES` (or so large that protobuf cannot size it)."""
    try:
        return proto.ByteSize() > LARGE_MODEL_BYTES
    except (EncodeError, ValueError):  # protobuf cannot even size it
        return True


def _graphs(model: ir.Model) -> Iterator[ir.Graph]:
    """The main graph and every subgraph: what ``model.graphs()`` yields, without its per-node generator
    (about 20 us per node, a second at 20k nodes for a model that has no subgraph at all)."""
    pending = [model.graph]
    while pending:
        graph = pending.pop()
        yield graph
        for node in graph:
            if not node.attributes:
                continue
            for attr in node.attributes.values():
                if attr.type == ir.AttributeType.GRAPH:
                    pending.append(attr.as_graph())
                elif attr.type == ir.AttributeType.GRAPHS:
                    pending.extend(attr.as_graphs())


def weights_nbytes(model: ir.Model) -> int:
    """Bytes held by the initializers of every graph of ``model`` (what dominates its serialized size)."""
    return sum(
        _approximate_nbytes(value.const_value)
        for graph in _graphs(model)
        for value in graph.initializers.values()
        if value.const_value is not None
    )


def _approximate_nbytes(tensor: ir.TensorProtocol) -> int:
    """``tensor.nbytes``, or the size of the proto holding it (a few bytes more): a loaded tensor's
    ``nbytes`` rebuilds its shape from the proto each time, ~30 us (half a second at 20k nodes)."""
    raw = tensor.raw
    if isinstance(raw, onnx.TensorProto):
        return raw.ByteSize()
    return tensor.nbytes


def model_is_large(model: ir.Model) -> bool:
    """True if ``model``'s weights alone are past :data:`LARGE_MODEL_BYTES`."""
    return weights_nbytes(model) > LARGE_MODEL_BYTES


@contextmanager
def _weights_left_out(model: ir.Model) -> Iterator[None]:
    """Within the block, initializers over INLINE_TENSOR_MAX_BYTES are placeholders that hold no data."""
    swapped: list[tuple[ir.Value, Any]] = []
    try:
        for graph in _graphs(model):
            for name, value in graph.initializers.items():
                tensor = value.const_value
                if tensor is None or tensor.nbytes <= INLINE_TENSOR_MAX_BYTES:
                    continue
                placeholder = ir.ExternalTensor(
                    _PLACEHOLDER_LOCATION,
                    0,
                    tensor.nbytes,
                    tensor.dtype,
                    shape=ir.Shape(tensor.shape.numpy()),
                    name=tensor.name or name,
                )
                swapped.append((value, tensor))
                value.const_value = placeholder
        yield
    finally:
        for value, tensor in swapped:
            value.const_value = tensor


def weightless_proto(model: ir.Model) -> onnx.ModelProto:
    """``model`` as a proto whose large initializers are external references to a file that does not exist.

    Types, shapes and small constants (shape tensors, scales) are all there, so shape inference and the
    version converter work on it; reading a large weight from it fails. ``model`` is unchanged.
    """
    with _weights_left_out(model):
        return ir.to_proto(model)


def proto_for_tools(model: ir.Model) -> onnx.ModelProto:
    """``model`` as a proto for onnx's shape inference or version converter: the whole model, or a
    :func:`weightless_proto` of a large one (those tools serialize what they are given)."""
    return weightless_proto(model) if model_is_large(model) else ir.to_proto(model)


def proto_for_inference(model: ir.Model) -> onnx.ModelProto:
    """What ONNX shape inference reads of ``model``: :func:`proto_for_tools` without the value_info entry
    it writes for every initializer (inference takes an initializer's type from the tensor itself), nor
    the metadata, names of graphs or quantization annotations. The entries were a third of the
    serialization time: one per weight, scale and zero-point. ``model`` is unchanged."""
    with _weights_left_out(model) if model_is_large(model) else nullcontext():
        proto = onnx.ModelProto(ir_version=model.ir_version)
        for domain, version in sorted(model.opset_imports.items()):
            proto.opset_import.add(domain=domain, version=version)
        with_value_info = model.ir_version >= 10  # function value_info exists from IR version 10
        for function in model.functions.values():
            serde.serialize_function_into(proto.functions.add(), function, create_value_info=with_value_info)
        _main_graph_for_inference(proto.graph, model.graph)
    return proto


def _main_graph_for_inference(proto: onnx.GraphProto, graph: ir.Graph) -> None:
    """Inputs, initializers, nodes (subgraphs whole), the known types of node outputs, and outputs."""
    for value in graph.inputs:
        serde.serialize_value_into(proto.input.add(), value)
    for name, value in graph.initializers.items():
        if value.const_value is not None:
            tensor = proto.initializer.add()
            serde.serialize_tensor_into(tensor, value.const_value)
            tensor.name = name
    outputs = {id(value) for value in graph.outputs}
    for node in graph:
        _node_for_inference(proto.node.add(), node)
        for value in node.outputs:
            if (
                id(value) not in outputs
                and value.name
                and (value.type is not None or value.shape is not None)
            ):
                serde.serialize_value_into(proto.value_info.add(), value)
    for value in graph.outputs:
        serde.serialize_value_into(proto.output.add(), value)


# attribute types whose proto field _node_for_inference fills directly (the rest go through serde)
_PLAIN_ATTRIBUTES = {
    ir.AttributeType.INT: onnx.AttributeProto.INT,
    ir.AttributeType.INTS: onnx.AttributeProto.INTS,
    ir.AttributeType.FLOAT: onnx.AttributeProto.FLOAT,
    ir.AttributeType.FLOATS: onnx.AttributeProto.FLOATS,
}


def _node_for_inference(proto: onnx.NodeProto, node: ir.Node) -> None:
    """What inference reads of ``node``: op, domain, name, inputs, outputs and attributes (no doc string,
    overload or metadata). Int and float attributes are written directly; others (strings, tensors,
    subgraphs, references) through serde. About a fifth faster than ``serde.serialize_node_into`` (0.32 ->
    0.25 s for a 20k-node graph's nodes)."""
    proto.op_type = node.op_type
    if node.domain:
        proto.domain = node.domain
    if node.name:
        proto.name = node.name
    proto.input.extend(["" if value is None else value.name or "" for value in node.inputs])
    names = [value.name or "" for value in node.outputs]
    while names and not names[-1]:  # trailing unnamed outputs are left out, as serde does
        names.pop()
    proto.output.extend(names)
    if not node.attributes:
        return
    for attr in node.attributes.data.values():  # the dict under the mapping: its view iterates slowly
        plain = _PLAIN_ATTRIBUTES.get(attr.type)
        if plain is None or attr.is_ref():
            _attribute_into(proto, attr)
            continue
        field = proto.attribute.add(name=attr.name, type=plain)
        if plain == onnx.AttributeProto.INT:
            field.i = attr.value
        elif plain == onnx.AttributeProto.INTS:
            field.ints.extend(attr.value)
        elif plain == onnx.AttributeProto.FLOAT:
            field.f = attr.value
        else:
            field.floats.extend(attr.value)


def _attribute_into(proto: onnx.NodeProto, attr: ir.Attr) -> None:
    if attr.is_ref():
        serde.serialize_reference_attribute_into(proto.attribute.add(), attr)
    else:
        serde.serialize_attribute_into(proto.attribute.add(), attr)


def check_model(model: ir.Model, full_check: bool = False) -> None:
    """``onnx.checker.check_model`` on ``model``; a large one is checked from a weightless file.

    The checker insists that external data files exist, so the left-out weights get an empty (sparse) file.
    Raises ``onnx.checker.ValidationError``.
    """
    if not model_is_large(model):
        onnx.checker.check_model(ir.to_proto(model), full_check=full_check)
        return
    proto = weightless_proto(model)
    with tempfile.TemporaryDirectory(prefix="qdqc-check-") as folder:
        path = Path(folder) / "model.onnx"
        path.write_bytes(proto.SerializeToString())
        with open(Path(folder) / _PLACEHOLDER_LOCATION, "wb") as placeholder:
            placeholder.truncate(weights_nbytes(model))  # sparse: no disk used
        onnx.checker.check_model(str(path), full_check=full_check)


def put_weights_back(source: ir.Model, target: ir.Model) -> None:
    """Give ``target`` (made from a :func:`weightless_proto` of ``source``) ``source``'s weight tensors.

    Initializers are matched by name; a left-out weight ``target`` no longer names cannot come back
    (``ValueError``).
    """
    tensors = {
        name: value.const_value for graph in source.graphs() for name, value in graph.initializers.items()
    }
    for graph in target.graphs():
        for name, value in graph.initializers.items():
            tensor = value.const_value
            if isinstance(tensor, ir.ExternalTensor) and Path(tensor.location).name == _PLACEHOLDER_LOCATION:
                if name not in tensors:
                    raise ValueError(f"weight {name!r} was left out and cannot be put back")
                value.const_value = tensors[name]


def _copy_fields(source: Message, target: Message, skip: Sequence[str] = ()) -> None:
    """Copy every set field of ``source`` into ``target`` except those named in ``skip``."""
    for field, value in source.ListFields():
        if field.name in skip:
            continue
        if field.is_repeated:
            getattr(target, field.name).extend(value)
        elif field.message_type is not None:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)


def copy_without_initializers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` whose main graph has no initializers (nodes, inputs, outputs... are all there)."""
    skeleton = onnx.ModelProto()
    _copy_fields(proto, skeleton, skip=("graph",))
    _copy_fields(proto.graph, skeleton.graph, skip=("initializer",))
    return skeleton


def write_with_external_data(
    proto: onnx.ModelProto,
    path: str | os.PathLike,
    data_name: str,
    initializers: Iterable[onnx.TensorProto] | None = None,
) -> None:
    """Write ``proto`` to ``path`` with its main graph's initializers (over 1 KB) in ``data_name`` beside it.

    ``initializers`` replace the graph's own (for a copy made by :func:`copy_without_initializers`).
    Tensors are written one at a time; ``proto`` is neither modified nor copied whole (onnx.save_model with
    external data would do both).
    """
    path = Path(path)
    skeleton = copy_without_initializers(proto)
    offset = 0
    with open(path.parent / data_name, "wb") as data_file:
        for tensor in proto.graph.initializer if initializers is None else initializers:
            if tensor.data_location == onnx.TensorProto.EXTERNAL or not tensor.HasField("raw_data"):
                skeleton.graph.initializer.append(tensor)
                continue
            data = tensor.raw_data
            if len(data) <= INLINE_TENSOR_MAX_BYTES:
                skeleton.graph.initializer.append(tensor)
                continue
            external = skeleton.graph.initializer.add()
            _copy_fields(tensor, external, skip=("raw_data",))
            external.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(len(data)))):
                entry = external.external_data.add()
                entry.key, entry.value = key, value
            data_file.write(data)
            offset += len(data)
            del data
    path.write_bytes(skeleton.SerializeToString())


def inference_session(
    proto: onnx.ModelProto,
    options: Any,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    initializers: Iterable[onnx.TensorProto] | None = None,
) -> Any:
    """An onnxruntime session over ``proto``: from its bytes, or, past the protobuf limit, from a model file
    and its external data written to a temporary folder (removed once onnxruntime has read them).

    ``initializers`` (always the file route) replace the graph's own, see :func:`write_with_external_data`.
    """
    import onnxruntime as ort

    if initializers is None and not proto_is_large(proto):
        return ort.InferenceSession(proto.SerializeToString(), options, providers=list(providers))
    with tempfile.TemporaryDirectory(prefix="qdqc-ort-") as folder:
        path = Path(folder) / "model.onnx"
        write_with_external_data(proto, path, "model.onnx.data", initializers)
        return ort.InferenceSession(str(path), options, providers=list(providers))


def serialized_chunks(message: Message) -> Iterator[bytes]:
    """``message.SerializeToString(deterministic=True)`` in pieces, for messages of any size.

    A message within the limit is one piece. A larger one is cut field by field, element by element (each
    element of a repeated field is one piece): protobuf writes known fields in field-number order and a
    message's encoding is the concatenation of its fields' encodings, so the pieces join to the same bytes.
    """
    if not proto_is_large(message):
        yield message.SerializeToString(deterministic=True)
        return
    for field, value in message.ListFields():  # ListFields is in field-number order
        if field.is_repeated:
            for item in value:
                part = type(message)()
                getattr(part, field.name).append(item)
                yield part.SerializeToString(deterministic=True)
        else:
            part = type(message)()
            others = [other.name for other, _ in message.ListFields() if other.name != field.name]
            _copy_fields(message, part, skip=others)
            yield part.SerializeToString(deterministic=True)
