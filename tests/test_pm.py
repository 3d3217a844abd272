"""Pass manager: pipeline text, options, registry errors, instruments, failures and reproducers."""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import pytest

from qdq_compiler.errors import PassFailure, PipelineError
from qdq_compiler.ir import load_model
from qdq_compiler.pm import (
    Pass,
    PassContext,
    PassManager,
    PassResult,
    format_pipeline,
    get_pass,
    parse_pipeline,
    register_pass,
)
from qdq_compiler.pm.base import function_pass
from qdq_compiler.pm.instruments import IRDumpDir, PassStatistics, Reproducer, Timing, VerifyEach

TINY = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 4] x) => (float[1, 4] y) { a = Identity(x)  y = Relu(a) }"""


def tiny_model():
    return load_model(onnx.parser.parse_model(TINY))


@pytest.mark.parametrize(
    "text",
    [
        "canonicalize",
        "canonicalize,fold-bn",
        "canonicalize{remove-dropout=false},fold-constants{max-elements=10}",
        "infer-shapes{data-prop=false,strict=true},fold-bn",
    ],
)
def test_pipeline_text_round_trips(text: str) -> None:
    assert format_pipeline(parse_pipeline(text)) == text


def test_default_options_are_not_printed() -> None:
    assert format_pipeline(parse_pipeline("canonicalize{remove-dropout=true}")) == "canonicalize"


def test_options_are_typed() -> None:
    (pass_,) = parse_pipeline("fold-constants{max-elements=12}")
    assert pass_.options.max_elements == 12 and isinstance(pass_.options.max_elements, int)


def test_named_pipeline_expands() -> None:
    names = [p.name for p in parse_pipeline("prepare")]
    assert names[:2] == ["infer-shapes", "canonicalize"] and "fold-bn" in names


def test_unknown_pass_lists_valid_names() -> None:
    with pytest.raises(PipelineError, match=r"unknown pass 'fold-bm'.*canonicalize.*fold-bn"):
        parse_pipeline("canonicalize,fold-bm")


def test_unknown_option_lists_valid_options() -> None:
    with pytest.raises(PipelineError, match=r"no option 'max'.*max-elements"):
        parse_pipeline("fold-constants{max=3}")


def test_bad_option_value() -> None:
    with pytest.raises(PipelineError, match="expected an integer"):
        parse_pipeline("fold-constants{max-elements=lots}")
    with pytest.raises(PipelineError, match="needs a value"):
        parse_pipeline("canonicalize{remove-dropout}")


def test_name_clash_is_an_error() -> None:
    class Clash(Pass):
        name = "canonicalize"
        summary = "another canonicalize"

    with pytest.raises(PipelineError, match="already registered"):
        register_pass(Clash)
    assert get_pass("canonicalize").__name__ == "Canonicalize"


def test_function_pass_and_results() -> None:
    calls = []

    @function_pass("count-nodes-test", "Counts nodes (test only).")
    def count_nodes(model, ctx):
        calls.append(len(model.graph))
        return False

    result = count_nodes().run(tiny_model(), PassContext())
    assert result == PassResult(modified=False) and calls == [2]


def test_manager_runs_stamps_and_reports(tmp_path) -> None:
    model = tiny_model()
    stats = PassStatistics()
    timing = Timing()
    manager = PassManager("canonicalize,canonicalize", [VerifyEach(), stats, timing, IRDumpDir(tmp_path)])
    results = manager.run(model)
    assert [r.modified for r in results] == [True, False]
    assert stats.totals["canonicalize"]["num-identity-removed"] == 1
    assert [name for name, _ in timing.rows] == ["canonicalize", "canonicalize"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "000_input.txt",
        "001_canonicalize.txt",
        "002_canonicalize.txt",
    ]
    assert "Identity" in (tmp_path / "000_input.txt").read_text()
    assert "Identity" not in (tmp_path / "001_canonicalize.txt").read_text()
    assert model.metadata_props["qdq_compiler.pipeline"] == "canonicalize,canonicalize"
    assert "qdq_compiler.version" in model.metadata_props


@register_pass
class ExplodeForTest(Pass):
    """A pass that always fails; used to test failure reporting."""

    name = "explode-for-test"
    summary = "Always raises (tests only)."

    @dataclass(frozen=True)
    class Options:
        message: str = "boom"

    def run(self, model, ctx):
        error = RuntimeError(self.options.message)
        error.node_name = "y"
        raise error


def test_failure_names_pass_pipeline_and_node(tmp_path) -> None:
    manager = PassManager("canonicalize,explode-for-test,fold-bn")
    reproducer = Reproducer(tmp_path, manager.remaining_pipeline)
    manager.instruments.append(reproducer)
    with pytest.raises(PassFailure) as info:
        manager.run(tiny_model())
    text = str(info.value)
    assert "explode-for-test" in text and "pipeline so far: canonicalize" in text and "node 'y'" in text
    # The reproducer holds the failing pass's input (Identity already removed) and the rest of the pipeline.
    assert (tmp_path / "reproducer.pipeline").read_text().strip() == "explode-for-test,fold-bn"
    saved = load_model(tmp_path / "reproducer.onnx")
    assert [n.op_type for n in saved.graph] == ["Relu"]


def test_no_collection_runs_during_a_run_and_the_collector_comes_back() -> None:
    """Every collection walks the objects a run keeps (a million at 20k nodes) to find little garbage: a
    run making 300k objects sees none (Python's default thresholds run hundreds), and the collector is
    on again after it, also after a failing pass."""
    import gc

    collections: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(info["generation"])

    @function_pass("make-many-test", "Makes 300k objects (test only).")
    def make_many(model, ctx):
        ctx.extra["made"] = [[k] for k in range(300_000)]
        ctx.extra["collections during the run"] = list(collections)
        return False

    @function_pass("fail-test", "Fails (test only).")
    def fail(model, ctx):
        raise RuntimeError("boom")

    assert gc.isenabled()
    manager, model, failing = PassManager([make_many()]), tiny_model(), PassManager([fail()])
    ctx = PassContext()
    gc.callbacks.append(count)
    try:
        manager.run(model, ctx)
        with pytest.raises(PassFailure):
            failing.run(model, PassContext())
        enabled_after_failure = gc.isenabled()
        [[k] for k in range(300_000)]  # outside a run the collector works as before
    finally:
        gc.callbacks.remove(count)
    assert ctx.extra["collections during the run"] == [] and enabled_after_failure and len(collections) > 0


def test_a_run_inside_a_paused_block_leaves_the_collector_paused() -> None:
    import gc

    from qdq_compiler.collector import collector_paused

    with collector_paused():
        PassManager("canonicalize").run(tiny_model(), PassContext())
        inside = gc.isenabled()
    assert not inside and gc.isenabled()


def test_what_a_paused_block_made_joins_the_oldest_generation_unscanned() -> None:
    """Left in the youngest generation, everything a run made (a million objects at 20k nodes) would be
    walked by the young collection the first allocation after the run triggers."""
    import gc

    from qdq_compiler.collector import collector_paused

    assert gc.get_freeze_count() == 0
    with collector_paused():
        made = [[k] for k in range(1000)]
    assert not any(o is made for o in gc.get_objects(generation=0))
    assert any(o is made for o in gc.get_objects(generation=2)) and gc.get_freeze_count() == 0
