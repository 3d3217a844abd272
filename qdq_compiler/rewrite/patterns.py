"""Declarative rewrite patterns: describe a small subgraph, say when it may change, build its replacement.

A `Pattern` is a tree of `op(...)` descriptions rooted at the node that the rewrite replaces; the leaves are
`var(...)` (any value) and `const(...)` (a constant, with a predicate on its array). Capture names bind what
matched, and the `check` and `rewrite` callbacks read them back from the `Match`:

    clip_to_relu = Pattern(
        "clip-to-relu",
        op("Clip", "x", const("low", equals(0)), const("high", equals(np.inf), optional=True)),
        rewrite=lambda m: m.op("Relu", m["x"]),
    )

What an `op` description can say:

- op types: one (`"Clip"`) or alternatives (`("Relu", "LeakyRelu")`, not for the root) in one `domain`;
- inputs, in order: a capture name (`"x"`, shorthand for `var("x")`), `var`, `const` or a nested `op`. Node
  inputs past the described ones must be left out; `optional=True` also matches a left-out input;
- attributes: `attrs={"transB": 1, "alpha": lambda v: v > 0}`, a value to equal or a predicate. A node
  that leaves an attribute out is compared with the operator schema's default (the predicate gets None
  when there is none);
- single-use interior values: a nested `op`'s output must have exactly one user (the node above) and not be
  a graph output, so the rewrite can delete it (`single_use=False` lifts this; the node then stays);
- commutative inputs: `commutative=True` also tries the inputs in every other order;
- a capture name used twice must bind the same value (`op("Mul", "x", "x")` is a square); `"_"` binds nothing.

The rewrite returns the value(s) that replace the root's outputs (or None when it edited through
`m.rewriter` itself); matched nodes and Constant nodes that nothing reads any more are then erased.
`pattern_pass(name, summary, patterns)` registers a Pass that runs patterns under the greedy driver.
"""

from __future__ import annotations

import itertools
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import onnx
import onnx_ir as ir

from qdq_compiler.ir.editing import constant_array, remove_unused_initializers
from qdq_compiler.pm.base import Pass, PassContext, PassResult
from qdq_compiler.pm.registry import register_pass
from qdq_compiler.rewrite.driver import apply_patterns_greedily
from qdq_compiler.rewrite.rewriter import RewritePattern, Rewriter

__all__ = [
    "Const",
    "Match",
    "OpPattern",
    "Pattern",
    "Var",
    "const",
    "equals",
    "op",
    "pattern_pass",
    "var",
]

WILDCARD = "_"  # a capture name that binds nothing


@dataclass(frozen=True)
class Var:
    """Any value, bound to `name`; with `optional`, a left-out input matches too (bound to None)."""

    name: str
    optional: bool = False


@dataclass(frozen=True)
class Const:
    """A constant value (initializer or Constant node) whose array satisfies `where`, bound to `name`."""

    name: str
    where: Callable[[np.ndarray], bool] | None = None
    optional: bool = False


InputPattern = Union["OpPattern", Var, Const]


@dataclass(frozen=True)
class OpPattern:
    """A node: its op type(s), inputs, attribute constraints; see the module docstring."""

    op_types: tuple[str, ...]
    inputs: tuple[InputPattern, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None
    domain: str = ""
    commutative: bool = False
    single_use: bool = True

    def describe(self) -> str:
        return "|".join(self.op_types)


def op(
    op_type: str | Sequence[str],
    *inputs: InputPattern | str,
    name: str | None = None,
    attrs: Mapping[str, Any] | None = None,
    domain: str = "",
    commutative: bool = False,
    single_use: bool = True,
) -> OpPattern:
    """Describe a node; a string input is a capture name (`var`). `name` binds the node itself."""
    types = (op_type,) if isinstance(op_type, str) else tuple(op_type)
    if not types:
        raise ValueError("op() needs at least one op type")
    described = tuple(Var(item) if isinstance(item, str) else item for item in inputs)
    return OpPattern(types, described, dict(attrs or {}), name, domain, commutative, single_use)


def var(name: str, optional: bool = False) -> Var:
    """Any value, bound to `name`."""
    return Var(name, optional)


def const(name: str, where: Callable[[np.ndarray], bool] | None = None, optional: bool = False) -> Const:
    """A constant input whose numpy array satisfies `where` (any constant when None)."""
    return Const(name, where, optional)


def equals(expected: float | int | np.ndarray) -> Callable[[np.ndarray], bool]:
    """A `const` predicate: the array is not empty and every element equals `expected` (inf included)."""

    def predicate(array: np.ndarray) -> bool:
        return array.size > 0 and bool(np.all(np.asarray(array) == expected))

    predicate.__name__ = f"equals({expected!r})"
    return predicate


class Match:
    """What a pattern matched: capture names to values (`m["x"]`) and nodes (`m.node("clip")`).

    Also the way a rewrite builds its replacement: `m.op(...)` adds a node before the root and returns its
    output, `m.constant(array, name)` adds an initializer; `m.rewriter` is there for anything else.
    """

    def __init__(
        self,
        root: ir.Node,
        values: Mapping[str, ir.Value | None],
        nodes: Mapping[str, ir.Node],
        matched: Sequence[ir.Node],
        rewriter: Rewriter,
    ):
        self.root = root
        self.rewriter = rewriter
        self.matched_nodes: tuple[ir.Node, ...] = tuple(matched)
        self.reason = ""
        self._values = dict(values)
        self._nodes = dict(nodes)

    def __getitem__(self, name: str) -> ir.Value | None:
        """The value bound to `name` (None for a left-out optional input)."""
        if name not in self._values:
            raise KeyError(f"the pattern binds no value named {name!r} (values: {', '.join(self._values)})")
        return self._values[name]

    def node(self, name: str) -> ir.Node:
        """The node bound to `name` (`op(..., name=...)`)."""
        if name not in self._nodes:
            raise KeyError(f"the pattern binds no node named {name!r} (nodes: {', '.join(self._nodes)})")
        return self._nodes[name]

    def array(self, name: str) -> np.ndarray:
        """The numpy array of the constant bound to `name`."""
        value = self[name]
        array = constant_array(value)
        if array is None:
            raise KeyError(f"{name!r} is not bound to a constant")
        return array

    def attr(self, node_name: str, attr_name: str, default: Any = None) -> Any:
        """An attribute's Python value on the node bound to `node_name`, else its schema default."""
        return attribute_value(self.node(node_name), attr_name, default)

    def fail(self, reason: str) -> bool:
        """Refuse the match from `check` with a reason (logged at debug); returns False."""
        self.reason = reason
        return False

    def op(
        self,
        op_type: str,
        *inputs: ir.Value | None,
        domain: str = "",
        num_outputs: int = 1,
        **attributes: Any,
    ) -> ir.Value:
        """Add `op_type(inputs, attributes)` just before the root and return its first output.

        The new node is `value.producer()` (its other outputs, with `num_outputs` > 1, are there).
        """
        base = f"{self.root.name}_{op_type.lower()}" if self.root.name else op_type.lower()
        outputs = [ir.Value(name=self.rewriter.names.value(f"{base}_out")) for _ in range(num_outputs)]
        node = ir.Node(
            domain,
            op_type,
            list(inputs),
            ir.convenience.convert_attributes(attributes),
            outputs=outputs,
            name=self.rewriter.names.node(base),
        )
        self.rewriter.insert_before(self.root, node)
        return outputs[0]

    def constant(self, array: np.ndarray, name: str) -> ir.Value:
        """A new initializer holding `array`, named after `name` (made unique)."""
        return self.rewriter.add_constant(np.asarray(array), name)


Check = Callable[[Match], bool]
Rewrite = Callable[[Match], "ir.Value | Sequence[ir.Value] | None"]


class Pattern(RewritePattern):
    """A declarative pattern: `root` describes the subgraph, `check` may refuse it, `rewrite` replaces it.

    Runs under `apply_patterns_greedily` like any RewritePattern; each rewrite bumps the counter
    `num-<name>` (or `counter`).
    """

    def __init__(
        self,
        name: str,
        root: OpPattern,
        rewrite: Rewrite,
        check: Check | None = None,
        counter: str | None = None,
    ):
        if len(root.op_types) != 1:
            raise ValueError(f"pattern {name!r}: the root must have one op type (the driver's anchor)")
        self._name = name
        self.root = root
        self.rewrite = rewrite
        self.check = check
        self.counter = counter or f"num-{name}"
        self.anchor_op = root.op_types[0]
        self.anchor_domain = root.domain

    @property
    def name(self) -> str:
        """The pattern's name: its counter, and the start of its match-failure reasons."""
        return self._name

    def __repr__(self) -> str:
        return f"Pattern({self.name!r}, anchor={self.anchor_op})"

    def matches(self, node: ir.Node, rewriter: Rewriter) -> Iterator[Match | str]:
        """The first match rooted at `node` that `check` accepts, else one string saying why not."""
        matcher = _Matcher()
        refused = ""
        for bound in matcher.node(self.root, node, _Bindings(), interior=False):
            found = Match(node, bound.values, bound.nodes, bound.matched, rewriter)
            if self.check is None or self.check(found):
                yield found
                return
            refused = refused or found.reason or "check refused"
        yield refused or matcher.reason or "no match"

    def match_and_rewrite(self, node: ir.Node, rewriter: Rewriter) -> bool:
        for found in self.matches(node, rewriter):
            if isinstance(found, str):
                return rewriter.notify_match_failure(node, f"{self.name}: {found}")
            replacement = self.rewrite(found)
            if replacement is not None:
                _replace_outputs(found, replacement)
            _erase_dead(found.matched_nodes, rewriter)
            rewriter.count(self.counter)
            return True
        return False


def _replace_outputs(match: Match, replacement: ir.Value | Sequence[ir.Value]) -> None:
    """Point every user of the root's outputs at `replacement`, in order; the new values take the names."""
    new_values = [replacement] if isinstance(replacement, ir.Value) else list(replacement)
    root = match.root
    if len(new_values) > len(root.outputs):
        raise ValueError(f"rewrite returned {len(new_values)} values for {len(root.outputs)} outputs")
    for index, old in enumerate(root.outputs):
        if index >= len(new_values):
            if old.uses() or old.is_graph_output():
                raise ValueError(f"rewrite left output {index} of {root.name or root.op_type} in use")
            continue
        new = new_values[index]
        if old.is_graph_output() and (new.is_graph_input() or new.is_initializer() or new.is_graph_output()):
            new = match.op("Identity", new)  # two graph boundary values cannot merge: keep a copy
        match.rewriter.replace_value(old, new)


def _erase_dead(nodes: Sequence[ir.Node], rewriter: Rewriter) -> None:
    """Erase the matched nodes nothing reads any more (root first, so its inputs free the interior)."""
    for node in nodes:
        if node.graph is None:
            continue
        if any(out.uses() or out.is_graph_output() for out in node.outputs):
            continue
        rewriter.erase(node)


def attribute_value(node: ir.Node, name: str, default: Any = None) -> Any:
    """The Python value of attribute `name` of `node`; if left out, the operator schema's default."""
    attr = node.attributes.get(name)
    if attr is not None:
        return attr.value
    schema_default = _schema_default(node, name)
    return default if schema_default is None else schema_default


def _schema_default(node: ir.Node, name: str) -> Any:
    """The default of attribute `name` in the schema of `node`'s operator at the graph's opset, or None."""
    graph = node.graph
    domain = "" if node.domain == "ai.onnx" else node.domain
    version = node.version
    if version is None and graph is not None:
        version = graph.opset_imports.get(domain, graph.opset_imports.get("ai.onnx"))
    try:
        schema = (
            onnx.defs.get_schema(node.op_type, version, domain)
            if version is not None
            else onnx.defs.get_schema(node.op_type, domain)
        )
    except onnx.defs.SchemaError:
        return None
    attribute = schema.attributes.get(name)
    if attribute is None or attribute.default_value.type == onnx.AttributeProto.UNDEFINED:
        return None
    value = onnx.helper.get_attribute_value(attribute.default_value)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return tuple(value)
    return value


@dataclass(frozen=True)
class _Bindings:
    """What a partial match has bound so far (copied on each extension, so backtracking is free)."""

    values: Mapping[str, ir.Value | None] = field(default_factory=dict)
    nodes: Mapping[str, ir.Node] = field(default_factory=dict)
    matched: tuple[ir.Node, ...] = ()

    def with_value(self, name: str, value: ir.Value | None) -> _Bindings:
        if name == WILDCARD:
            return self
        return _Bindings({**self.values, name: value}, self.nodes, self.matched)

    def with_node(self, name: str | None, node: ir.Node) -> _Bindings:
        nodes = {**self.nodes, name: node} if name and name != WILDCARD else self.nodes
        return _Bindings(self.values, nodes, (*self.matched, node))

    def with_constant_node(self, node: ir.Node) -> _Bindings:
        """A Constant node feeding a `const`: erased with the match when nothing else reads it."""
        return _Bindings(self.values, self.nodes, (*self.matched, node))


class _Matcher:
    """Backtracking matcher; `reason` says why the last attempt failed."""

    def __init__(self) -> None:
        self.reason = ""

    def _fail(self, reason: str) -> Iterator[_Bindings]:
        self.reason = reason
        return iter(())

    def node(
        self, pattern: OpPattern, node: ir.Node, bound: _Bindings, interior: bool
    ) -> Iterator[_Bindings]:
        label = _label(node)
        domain = "" if node.domain == "ai.onnx" else node.domain
        if node.op_type not in pattern.op_types or domain != pattern.domain:
            return self._fail(f"{label} is not {pattern.describe()}")
        if any(node is seen for seen in bound.matched):
            return self._fail(f"{label} would be matched twice")
        reason = _attribute_mismatch(pattern, node)
        if reason:
            return self._fail(f"{label}: {reason}")
        if interior:
            output = node.outputs[0]
            if pattern.single_use and (len(output.uses()) != 1 or output.is_graph_output()):
                return self._fail(f"{label}'s output has other users")
            if any(out.uses() or out.is_graph_output() for out in node.outputs[1:]):
                return self._fail(f"{label}'s other outputs are used")
        count = len(pattern.inputs)
        if any(value is not None for value in node.inputs[count:]):
            return self._fail(f"{label} has more than {count} inputs")
        values = [node.inputs[i] if i < len(node.inputs) else None for i in range(count)]
        bound = bound.with_node(pattern.name, node)
        orders = itertools.permutations(range(count)) if pattern.commutative else [tuple(range(count))]
        return self._inputs_in_orders(pattern, values, orders, bound)

    def _inputs_in_orders(
        self,
        pattern: OpPattern,
        values: list[ir.Value | None],
        orders: Iterator[tuple[int, ...]] | list[tuple[int, ...]],
        bound: _Bindings,
    ) -> Iterator[_Bindings]:
        for order in orders:
            yield from self._inputs(pattern.inputs, [values[i] for i in order], bound)

    def _inputs(
        self, patterns: Sequence[InputPattern], values: Sequence[ir.Value | None], bound: _Bindings
    ) -> Iterator[_Bindings]:
        if not patterns:
            yield bound
            return
        for extended in self._input(patterns[0], values[0], bound):
            yield from self._inputs(patterns[1:], values[1:], extended)

    def _input(self, pattern: InputPattern, value: ir.Value | None, bound: _Bindings) -> Iterator[_Bindings]:
        if value is None:
            if isinstance(pattern, (Var, Const)) and pattern.optional:
                return self._bind(pattern.name, None, bound)
            return self._fail(f"an input for {_describe(pattern)} is left out")
        if isinstance(pattern, Var):
            return self._bind(pattern.name, value, bound)
        if isinstance(pattern, Const):
            array = constant_array(value)
            if array is None:
                return self._fail(f"{value.name or 'input'} is not a constant ({pattern.name})")
            if pattern.where is not None and not pattern.where(array):
                where = getattr(pattern.where, "__name__", "predicate")
                return self._fail(f"constant {pattern.name} fails {where}")
            producer = value.producer()
            if producer is not None:
                bound = bound.with_constant_node(producer)
            return self._bind(pattern.name, value, bound)
        producer = value.producer()
        if producer is None:
            return self._fail(f"{value.name or 'input'} is not computed by {pattern.describe()}")
        if producer.outputs[0] is not value:
            return self._fail(f"{value.name or 'input'} is not the first output of {producer.op_type}")
        return self.node(pattern, producer, bound, interior=True)

    def _bind(self, name: str, value: ir.Value | None, bound: _Bindings) -> Iterator[_Bindings]:
        if name != WILDCARD and name in bound.values and bound.values[name] is not value:
            return self._fail(f"{name} would bind two different values")
        return iter((bound.with_value(name, value),))


def _label(node: ir.Node) -> str:
    """`Relu 'act1'`, or `Relu computing 'a'` for an unnamed node."""
    if node.name:
        return f"{node.op_type} {node.name!r}"
    output = node.outputs[0].name if node.outputs else None
    return f"{node.op_type} computing {output!r}" if output else node.op_type


def _describe(pattern: InputPattern) -> str:
    return pattern.describe() if isinstance(pattern, OpPattern) else pattern.name


def _attribute_mismatch(pattern: OpPattern, node: ir.Node) -> str:
    """Why `node`'s attributes do not satisfy the pattern's constraints ('' when they do)."""
    for name, expected in pattern.attrs.items():
        actual = attribute_value(node, name)
        if callable(expected):
            if not expected(actual):
                return f"attribute {name}={actual!r} fails the predicate"
        elif not _same(actual, expected):
            return f"attribute {name}={actual!r}, not {expected!r}"
    return ""


def _same(actual: Any, expected: Any) -> bool:
    """Attribute equality: sequences compare element-wise, strings against str or bytes."""
    if actual is None:
        return False
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        return len(actual) == len(expected) and all(_same(a, e) for a, e in zip(actual, expected))
    if isinstance(actual, bytes):
        actual = actual.decode()
    return bool(actual == expected)


def pattern_pass(name: str, summary: str, patterns: Sequence[RewritePattern]) -> type[Pass]:
    """Register and return a Pass (no options) that applies `patterns` greedily until nothing matches.

    Its statistics are the patterns' counters, plus `num-initializers-removed` for constants the rewrites
    left unused. Why a node did not match is logged at debug (`-vv`).
    """
    chosen = tuple(patterns)

    def run(self: Pass, model: ir.Model, ctx: PassContext) -> PassResult:
        rewriter = apply_patterns_greedily(model.graph, chosen)  # logs each match failure at debug
        statistics: Counter[str] = Counter(rewriter.statistics)
        if rewriter.modified:
            removed = remove_unused_initializers(model.graph)
            if removed:
                statistics["num-initializers-removed"] += removed
        return PassResult(modified=rewriter.modified, statistics=statistics)

    caller = sys._getframe(1).f_globals.get("__name__", __name__)
    class_name = "".join(part.capitalize() for part in name.split("-")) + "Pass"
    listing = "\n".join(f"- {pattern!r}" for pattern in chosen)
    cls = type(
        class_name,
        (Pass,),
        {
            "name": name,
            "summary": summary,
            "patterns": chosen,
            "run": run,
            "__module__": caller,
            "__doc__": f"{summary}\n\nPatterns:\n{listing}",
        },
    )
    return register_pass(cls)
