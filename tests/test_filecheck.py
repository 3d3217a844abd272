"""The FileCheck-style matcher (qdq_compiler/filecheck.py): each directive passing and failing, patterns,
variables, label blocks, and the failure messages."""

from __future__ import annotations

import pytest

from qdq_compiler.filecheck import CheckFailed, CheckSyntaxError, check_text, parse_directives

DUMP = """\
const %s1 = float<scalar> 0.125
const %s2 = float<scalar> 0.125
%a: float[1] = Conv(%x, %w)  # conv1
%b: float[1] = Relu(%a)  # relu1
%c: float[1] = Conv(%b, %w)  # conv2
%d: float[1] = Relu(%c)  # relu2
"""


def run(*check_lines: str, text: str = DUMP) -> None:
    check_text(parse_directives(check_lines, "case.onnxtxt"), text)


def failure(*check_lines: str, text: str = DUMP) -> str:
    with pytest.raises(CheckFailed) as raised:
        run(*check_lines, text=text)
    return str(raised.value)


def test_check_finds_patterns_in_order() -> None:
    run("# CHECK: Conv(%x", "# CHECK: Relu(%a)", "# CHECK: # conv2")


def test_check_does_not_look_back() -> None:
    message = failure("# CHECK: Relu(%c)", "# CHECK: Relu(%a)")
    assert "case.onnxtxt:2: error: CHECK: expected pattern not found" in message
    assert "# CHECK: Relu(%a)" in message
    # The search starts after the previous match (line 6), and that is where the message points.
    assert "searched dump lines 6-6" in message


def test_check_not_found_names_the_nearest_line() -> None:
    message = failure("# CHECK: %b: float[1] = Relu(%z)")
    assert "nearest line:" in message
    assert ">     4 | %b: float[1] = Relu(%a)  # relu1" in message


def test_check_next_passes_on_the_next_line() -> None:
    run("# CHECK: # conv1", "# CHECK-NEXT: Relu(%a)", "# CHECK-NEXT: Conv(%b")


def test_check_next_fails_when_a_line_is_skipped() -> None:
    message = failure("# CHECK: # conv1", "# CHECK-NEXT: Conv(%b")
    assert (
        "case.onnxtxt:2: error: CHECK-NEXT: match is 2 lines after the previous match, not the next line"
        in message
    )
    assert "previous match at dump line 3, this one at line 5" in message


def test_check_next_fails_on_the_same_line() -> None:
    message = failure("# CHECK: %a: float[1]", "# CHECK-NEXT: Conv(%x")
    assert "on the same line as the previous match, not the next line" in message


def test_check_next_needs_a_check_before_it() -> None:
    with pytest.raises(CheckSyntaxError, match="CHECK-NEXT without a CHECK before it"):
        run("# CHECK-NEXT: Conv")


def test_check_not_passes_when_absent_between_matches() -> None:
    # Relu(%c) exists, but after conv2: only the range between conv1 and conv2 is searched.
    run("# CHECK: # conv1", "# CHECK-NOT: Relu(%c)", "# CHECK: # conv2")


def test_check_not_fails_when_present_between_matches() -> None:
    message = failure("# CHECK: # conv1", "# CHECK-NOT: Relu", "# CHECK: # conv2")
    assert "case.onnxtxt:2: error: CHECK-NOT: excluded pattern found" in message
    assert "found at dump line 4" in message
    assert ">     4 | %b: float[1] = Relu(%a)  # relu1" in message


def test_check_not_at_the_end_searches_to_the_end() -> None:
    run("# CHECK: # relu1", "# CHECK-NOT: Sigmoid")
    assert "found at dump line 6" in failure("# CHECK: # conv2", "# CHECK-NOT: relu2")


def test_check_label_splits_the_dump_into_blocks() -> None:
    run("# CHECK-LABEL: # conv1", "# CHECK: Relu", "# CHECK-LABEL: # conv2", "# CHECK: Relu(%c)")
    # Relu(%c) exists, but not in the block between the two labels.
    message = failure("# CHECK-LABEL: # conv1", "# CHECK: Relu(%c)", "# CHECK-LABEL: # conv2")
    assert "case.onnxtxt:2: error: CHECK: expected pattern not found" in message
    assert "searched dump lines 3-5" in message


def test_check_next_may_follow_a_label() -> None:
    run("# CHECK-LABEL: # conv1", "# CHECK-NEXT: Relu(%a)")
    assert "1 lines after the previous match" not in failure(
        "# CHECK-LABEL: # conv1", "# CHECK-NEXT: Conv(%b"
    )
    assert "2 lines after the previous match" in failure("# CHECK-LABEL: # conv1", "# CHECK-NEXT: Conv(%b")


def test_check_label_not_found() -> None:
    message = failure("# CHECK-LABEL: # conv3")
    assert "case.onnxtxt:1: error: CHECK-LABEL: expected pattern not found" in message


def test_regex_blocks_match_loosely() -> None:
    run("# CHECK: const %s1 = float<scalar> {{0\\.1[0-9]+}}", "# CHECK: Conv({{%[a-z]}}, %w)")
    message = failure("# CHECK: const %s1 = float<scalar> {{0\\.2[0-9]*}}")
    assert "{{0\\.2[0-9]*}}" in message


def test_regex_metacharacters_outside_blocks_are_literal() -> None:
    run("# CHECK: float[1] = Conv(%x, %w)")
    failure("# CHECK: float.1. = Conv")


def test_variables_capture_and_compare() -> None:
    run("# CHECK: %s1 = float<scalar> [[S:[0-9.]+]]", "# CHECK: %s2 = float<scalar> [[S]]")
    text = DUMP.replace("%s2 = float<scalar> 0.125", "%s2 = float<scalar> 0.25")
    message = failure(
        "# CHECK: %s1 = float<scalar> [[S:[0-9.]+]]", "# CHECK: %s2 = float<scalar> [[S]]", text=text
    )
    assert "# CHECK: %s2 = float<scalar> [[S]]" in message
    assert "with [[S]] = '0.125'" in message
    assert "nearest line:" in message and "%s2 = float<scalar> 0.25" in message


def test_variable_used_before_definition_is_an_error() -> None:
    with pytest.raises(CheckSyntaxError, match=r"\[\[S\]\] is used before any check defines it"):
        run("# CHECK: [[S]]")


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("# CHECK-DAG: x", "unknown directive CHECK-DAG"),
        ("# CHECK:   ", "empty pattern"),
        ("# CHECK: {{[}}", "bad regex"),
        ("# CHECK-LABEL: [[X:a]]", "cannot define or use"),
    ],
)
def test_bad_check_lines_are_reported_with_their_line(line: str, error: str) -> None:
    with pytest.raises(CheckSyntaxError, match=error) as raised:
        parse_directives(["# RUN: x", line], "case.py")
    assert str(raised.value).startswith("case.py:2: ")


def test_parse_skips_other_lines_and_numbers_from_first_line() -> None:
    directives = parse_directives(
        ["# RUN: x", "y = 1", "# CHECK: a", "  # CHECK-NOT: b"], "f.py", first_line=10
    )
    assert [(d.kind, d.pattern, d.line) for d in directives] == [("CHECK", "a", 12), ("CHECK-NOT", "b", 13)]


def test_no_checks_is_an_error() -> None:
    with pytest.raises(CheckSyntaxError, match="no CHECK lines"):
        check_text([], DUMP)


def test_long_dump_lines_are_cut_in_messages() -> None:
    text = "x = Conv(" + "a" * 400 + ")\n"
    message = failure("# CHECK: Relu", text=text)
    assert "..." in message and "a" * 200 not in message


def test_long_line_is_shown_around_the_excluded_match() -> None:
    text = "x = Conv(" + "a" * 400 + ", %bad)\n"
    message = failure("# CHECK-NOT: %bad", text=text)
    assert ">     1 | ...aaa" in message and "%bad)" in message


def test_nearest_line_counts_partly_matching_words() -> None:
    message = failure("# CHECK: %c: float[1] = Conv(%b_dequantized, %w,")
    assert ">     5 | %c: float[1] = Conv(%b, %w)  # conv2" in message


def test_a_pattern_never_spans_lines() -> None:
    # [^,]+ could match across the newline after "conv1"; FileCheck patterns match within one line.
    failure("# CHECK: # conv1{{[^,]+}}Relu(%a)")
    run("# CHECK: Relu(%a){{.*$}}", "# CHECK-NEXT: {{^}}%c")
