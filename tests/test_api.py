"""qdq_compiler.api, the one import for pass authors: every name exported exists and its map lists it."""

from __future__ import annotations

import re

import qdq_compiler.api as api


def test_every_exported_name_exists() -> None:
    missing = [name for name in api.__all__ if not hasattr(api, name)]
    assert missing == []
    assert len(set(api.__all__)) == len(api.__all__), "a name is exported twice"


def test_the_module_docstring_maps_every_exported_name() -> None:
    doc = api.__doc__ or ""
    mentioned = set(re.findall(r"``([A-Za-z_][A-Za-z0-9_]*)``", doc))
    assert sorted(set(api.__all__) - mentioned) == []


def test_it_exports_what_a_pass_author_needs() -> None:
    for name in ("Pass", "PassContext", "PassResult", "register_pass", "Rewriter", "RewritePattern"):
        assert name in api.__all__
    for name in ("apply_patterns_greedily", "Pattern", "op", "const", "pattern_pass", "ir", "input_of"):
        assert name in api.__all__
