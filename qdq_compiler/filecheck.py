"""FileCheck-style checks of a text dump, with LLVM FileCheck's semantics for the directives golden cases use.

A check line is a comment ``# CHECK: <pattern>`` (also ``CHECK-NEXT``, ``CHECK-NOT``, ``CHECK-LABEL``):

- ``CHECK``: the pattern occurs at or after the end of the previous match.
- ``CHECK-NEXT``: the pattern occurs on the line right after the previous match.
- ``CHECK-NOT``: the pattern does not occur between the previous match and the next positive match (or the
  end of the block).
- ``CHECK-LABEL``: matched first, in order; labels split the dump into blocks and the other checks between
  two labels must match inside the block between them.

Pattern text is literal except ``{{regex}}`` (a Python regular expression), ``[[NAME:regex]]`` (match the
regex and remember the text as NAME; the regex cannot contain ``]]``) and ``[[NAME]]`` (the text NAME matched
before, literally). Leading and trailing blanks of a pattern are ignored; blanks inside match exactly.
A failed check raises `CheckFailed` whose message names the directive, its file:line, and the dump lines
where it was looked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

KINDS = ("CHECK", "CHECK-NEXT", "CHECK-NOT", "CHECK-LABEL")
_DIRECTIVE = re.compile(r"^\s*#\s*(CHECK(?:-[A-Z]+)?):(.*)$")
# `{{regex}}`, `[[NAME:regex]]` or `[[NAME]]` inside a pattern.
_SPECIAL = re.compile(r"\{\{(.*?)\}\}|\[\[([A-Za-z_][A-Za-z0-9_]*)(?::(.*?))?\]\]")
# Dump lines longer than this are cut in failure messages.
_SHOWN_WIDTH = 150


class CheckSyntaxError(ValueError):
    """A check line that cannot be used (unknown directive, empty pattern, bad regex, misplaced NEXT)."""


class CheckFailed(AssertionError):
    """A check did not hold on the dump; the message is meant to be read as is."""


@dataclass(frozen=True)
class Directive:
    """One check line: its kind, its pattern text and where it was written."""

    kind: str
    pattern: str
    file: str
    line: int

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"

    def __str__(self) -> str:
        return f"# {self.kind}: {self.pattern}"


def parse_directives(lines: Iterable[str], file: str, first_line: int = 1) -> list[Directive]:
    """The check lines among `lines` (other lines are ignored); `first_line` is the number of the first."""
    directives = []
    for number, text in enumerate(lines, start=first_line):
        found = _DIRECTIVE.match(text)
        if not found:
            continue
        kind, pattern = found.group(1), found.group(2).strip()
        where = f"{file}:{number}"
        if kind not in KINDS:
            raise CheckSyntaxError(f"{where}: unknown directive {kind} (known: {', '.join(KINDS)})")
        if not pattern:
            raise CheckSyntaxError(f"{where}: {kind} has an empty pattern")
        directive = Directive(kind, pattern, file, number)
        _compile(directive, {})  # syntax errors show up at parse time, not only when the check runs
        if kind == "CHECK-LABEL" and "[[" in pattern:
            raise CheckSyntaxError(f"{where}: CHECK-LABEL cannot define or use [[variables]]")
        directives.append(directive)
    return directives


def _compile(directive: Directive, variables: dict[str, str]) -> re.Pattern[str]:
    """The regular expression of a pattern; `variables` gives the values of `[[NAME]]` uses."""
    parts: list[str] = []
    defined: set[str] = set()
    position = 0
    for special in _SPECIAL.finditer(directive.pattern):
        parts.append(re.escape(directive.pattern[position : special.start()]))
        regex, name, definition = special.groups()
        if regex is not None:
            parts.append(f"(?:{regex})")
        elif definition is not None:
            if name in defined:
                raise CheckSyntaxError(f"{directive.location}: [[{name}]] defined twice in one pattern")
            defined.add(name)
            parts.append(f"(?P<{name}>{definition})")
        elif name in variables:
            parts.append(re.escape(variables[name]))
        else:
            parts.append(f"(?P<_undefined_{name}>)")  # placeholder: the check reports the missing variable
        position = special.end()
    parts.append(re.escape(directive.pattern[position:]))
    try:
        return re.compile("".join(parts), re.MULTILINE)
    except re.error as error:
        raise CheckSyntaxError(f"{directive.location}: bad regex in {directive}: {error}") from None


class _Dump:
    """The checked text with line lookups for positions."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = text.splitlines()
        self._starts = [0]
        for line in self.lines:
            self._starts.append(self._starts[-1] + len(line) + 1)

    def search(self, regex: re.Pattern[str], begin: int, end: int) -> re.Match[str] | None:
        """The first match of `regex` in text[begin:end] that lies within one line (as in FileCheck, a
        pattern never spans lines, even when its regex could match a newline)."""
        for index in range(self.line_of(begin), len(self.lines)):
            low = max(begin, self._starts[index])
            if low >= end:
                break
            found = regex.search(self.text, low, min(end, self._starts[index] + len(self.lines[index])))
            if found is not None:
                return found
        return None

    def line_of(self, offset: int) -> int:
        """0-based line index holding `offset`."""
        low, high = 0, len(self.lines)
        while low < high:
            middle = (low + high + 1) // 2
            if self._starts[middle] <= offset:
                low = middle
            else:
                high = middle - 1
        return low

    def column_of(self, offset: int) -> int:
        return offset - self._starts[self.line_of(offset)]

    def excerpt(self, first: int, last: int, marked: int | None = None, column: int = 0) -> str:
        """Lines first..last (0-based, inclusive) numbered from 1, `marked` flagged with `>`; a long marked
        line is shown around `column` (where the match is)."""
        shown = []
        for index in range(max(first, 0), min(last, len(self.lines) - 1) + 1):
            text = self.lines[index]
            if index == marked and column > _SHOWN_WIDTH - 40:
                start = column - _SHOWN_WIDTH // 2
                end = start + _SHOWN_WIDTH - 6
                text = "..." + text[start:end] + ("..." if len(text) > end else "")
            elif len(text) > _SHOWN_WIDTH:
                text = text[: _SHOWN_WIDTH - 3] + "..."
            flag = ">" if index == marked else " "
            shown.append(f"  {flag}{index + 1:6} | {text}")
        return "\n".join(shown) if shown else "  (no dump lines)"


def check_text(directives: list[Directive], text: str, name: str = "dump") -> None:
    """Run `directives` against `text`; raise `CheckFailed` at the first check that does not hold."""
    if not directives:
        raise CheckSyntaxError(f"{name}: no CHECK lines to run")
    dump = _Dump(text)
    blocks = _label_blocks(directives, dump, name)
    variables: dict[str, str] = {}
    for checks, begin, end in blocks:
        _check_block(checks, dump, begin, end, variables, name)


def _label_blocks(
    directives: list[Directive], dump: _Dump, name: str
) -> list[tuple[list[Directive], int, int]]:
    """Match every CHECK-LABEL in order and split the other directives into (checks, begin, end) blocks."""
    blocks: list[tuple[list[Directive], int, int]] = []
    checks: list[Directive] = []
    begin = 0
    for directive in directives:
        if directive.kind != "CHECK-LABEL":
            checks.append(directive)
            continue
        found = dump.search(_compile(directive, {}), begin, len(dump.text))
        if found is None:
            raise CheckFailed(_not_found(directive, dump, begin, len(dump.text), name))
        blocks.append((checks, begin, found.start()))
        checks = []
        begin = found.end()
    blocks.append((checks, begin, len(dump.text)))
    return blocks


def _check_block(
    checks: list[Directive], dump: _Dump, begin: int, end: int, variables: dict[str, str], name: str
) -> None:
    """The non-label checks of one block, matched inside text[begin:end]; a block that starts after a label
    counts the label as its previous match (so CHECK-NEXT may follow a CHECK-LABEL)."""
    position = begin
    # The line index of the previous positive match in this block.
    previous_match: int | None = dump.line_of(begin - 1) if begin > 0 else None
    pending_not: list[Directive] = []
    for directive in checks:
        if directive.kind == "CHECK-NOT":
            pending_not.append(directive)
            continue
        if directive.kind == "CHECK-NEXT" and previous_match is None:
            raise CheckSyntaxError(f"{directive.location}: CHECK-NEXT without a CHECK before it in its block")
        regex = _compile_with(directive, variables)
        found = dump.search(regex, position, end)
        if found is None:
            raise CheckFailed(_not_found(directive, dump, position, end, name, variables))
        if directive.kind == "CHECK-NEXT":
            assert previous_match is not None
            matched_line = dump.line_of(found.start())
            if matched_line != previous_match + 1:
                raise CheckFailed(_not_next(directive, dump, previous_match, matched_line, name))
        _check_nots(pending_not, dump, position, found.start(), variables, name)
        pending_not = []
        variables.update({key: value for key, value in found.groupdict().items() if value is not None})
        previous_match = dump.line_of(max(found.end() - 1, found.start()))
        position = found.end()
    _check_nots(pending_not, dump, position, end, variables, name)


def _compile_with(directive: Directive, variables: dict[str, str]) -> re.Pattern[str]:
    """Compile a pattern whose every `[[NAME]]` use is defined."""
    for special in _SPECIAL.finditer(directive.pattern):
        regex, used, definition = special.groups()
        if regex is None and definition is None and used not in variables:
            raise CheckSyntaxError(
                f"{directive.location}: [[{used}]] is used before any check defines it ({directive})"
            )
    return _compile(directive, variables)


def _check_nots(
    nots: list[Directive], dump: _Dump, begin: int, end: int, variables: dict[str, str], name: str
) -> None:
    for directive in nots:
        found = dump.search(_compile_with(directive, variables), begin, end)
        if found is not None:
            line = dump.line_of(found.start())
            raise CheckFailed(
                f"{directive.location}: error: {directive.kind}: excluded pattern found in {name}\n"
                f"    {directive}\n{_uses(directive, variables)}"
                f"  found at {name} line {line + 1} (searched lines "
                f"{dump.line_of(begin) + 1}-{dump.line_of(max(end - 1, begin)) + 1}):\n"
                + dump.excerpt(line - 2, line + 2, marked=line, column=dump.column_of(found.start()))
            )


def _not_found(
    directive: Directive,
    dump: _Dump,
    begin: int,
    end: int,
    name: str,
    variables: dict[str, str] | None = None,
) -> str:
    """'expected pattern not found' with the lines where the search started and the nearest line."""
    first = dump.line_of(begin)
    last = dump.line_of(max(end - 1, begin))
    message = (
        f"{directive.location}: error: {directive.kind}: expected pattern not found in {name}\n"
        f"    {directive}\n{_uses(directive, variables or {})}"
        f"  searched {name} lines {first + 1}-{last + 1}, starting at:\n" + dump.excerpt(first, first + 2)
    )
    nearest = _nearest_line(directive.pattern, dump, first, last)
    if nearest is not None:
        message += "\n  nearest line:\n" + dump.excerpt(nearest, nearest, marked=nearest)
    return message


def _uses(directive: Directive, variables: dict[str, str]) -> str:
    """'  with [[S]] = "0.5"' lines for the variables the pattern uses (empty when it uses none)."""
    used = [m.group(2) for m in _SPECIAL.finditer(directive.pattern) if m.group(2) and m.group(3) is None]
    return "".join(f"  with [[{n}]] = {variables[n]!r}\n" for n in dict.fromkeys(used) if n in variables)


def _not_next(directive: Directive, dump: _Dump, previous: int, matched: int, name: str) -> str:
    where = "on the same line as" if matched == previous else f"{matched - previous} lines after"
    return (
        f"{directive.location}: error: CHECK-NEXT: match is {where} the previous match, not the next line\n"
        f"    {directive}\n"
        f"  previous match at {name} line {previous + 1}, this one at line {matched + 1}:\n"
        + dump.excerpt(previous, previous + 1, marked=previous)
        + ("\n  ...\n" + dump.excerpt(matched, matched, marked=matched) if matched > previous + 1 else "")
    )


def _nearest_line(pattern: str, dump: _Dump, first: int, last: int) -> int | None:
    """The first dump line in first..last holding the most of the pattern's literal words (a hint for typos
    and near misses; a word counts by its longest prefix found in the line), if it holds at least half."""
    words = _SPECIAL.sub(" ", pattern).split()
    total = sum(len(word) for word in words)
    best, best_share = None, 0.5
    for index in range(first, min(last, len(dump.lines) - 1) + 1):
        line = dump.lines[index]
        share = sum(_found_prefix(word, line) for word in words) / max(total, 1)
        if share > best_share:
            best, best_share = index, share
    return best


def _found_prefix(word: str, line: str) -> int:
    """The length of the longest prefix of `word` that occurs in `line`."""
    low, high = 0, len(word)
    while low < high:
        middle = (low + high + 1) // 2
        if word[:middle] in line:
            low = middle
        else:
            high = middle - 1
    return low
