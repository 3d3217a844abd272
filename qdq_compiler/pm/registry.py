"""Registry of passes and named pipelines: built-ins, entry-point plugins and plugin files."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from qdq_compiler.errors import PipelineError
from qdq_compiler.pm.base import Pass

if TYPE_CHECKING:
    from qdq_compiler.pm.pipeline_options import PipelineOption


@dataclass(frozen=True)
class NamedPipeline:
    """A named pipeline: its text, one-line summary, and the options it takes (`trt-int8{target=trt11}`)."""

    text: str
    summary: str
    options: tuple[PipelineOption, ...] = ()


_PASSES: dict[str, type[Pass]] = {}
_PIPELINES: dict[str, NamedPipeline] = {}
_PLUGIN_FILES: set[Path] = set()  # plugin files already executed, by resolved path
_LOADED = False
_BUILTINS_LOADED = False
ENTRY_POINT_GROUP = "qdq_compiler.passes"


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator adding a pass to the registry. A name clash is an error, never an override."""
    if not cls.name or cls.name != cls.name.lower() or " " in cls.name or "_" in cls.name:
        raise PipelineError(f"pass name '{cls.name}' must be kebab-case")
    existing = _PASSES.get(cls.name)
    if existing is not None and existing is not cls:
        raise PipelineError(
            f"pass '{cls.name}' is already registered by {existing.__module__}; "
            f"{cls.__module__} cannot register it again"
        )
    if not cls.summary:
        raise PipelineError(f"pass '{cls.name}' needs a one-line summary")
    _PASSES[cls.name] = cls
    return cls


def register_pipeline(name: str, text: str, summary: str, options: Iterable[PipelineOption] = ()) -> None:
    """Register a named pipeline; its text is what `qdqc passes` shows.

    `options` are the pipeline options it may take; those whose passes the pipeline does not run are
    dropped when it is used (`pipeline_options`).
    """
    entry = NamedPipeline(text, summary, tuple(options))
    if name in _PIPELINES and _PIPELINES[name] != entry:
        raise PipelineError(f"pipeline '{name}' is already registered")
    _PIPELINES[name] = entry


def load_builtin_passes() -> None:
    """Import every module of qdq_compiler.passes and every entry-point plugin, once."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    _load_builtins()
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            entry.load()
        except Exception as exc:  # a broken installed plugin: name it, keep one line
            raise PipelineError(
                f"installed pass plugin '{entry.name}' ({entry.value}) failed to load: {_one_line(exc)}"
            ) from None


def _load_builtins() -> None:
    """Import every module of qdq_compiler.passes and the named pipelines, once."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    import qdq_compiler.passes as builtin

    for module in sorted(pkgutil.iter_modules(builtin.__path__), key=lambda m: m.name):
        importlib.import_module(f"{builtin.__name__}.{module.name}")
    import qdq_compiler.pipelines  # noqa: F401  (registers the named pipelines)


def get_builtin_pass(name: str) -> type[Pass]:
    """A built-in pass class, without loading installed plugins (for help texts built at import)."""
    _load_builtins()
    if name not in _PASSES:
        raise PipelineError(f"unknown pass '{name}'")
    return _PASSES[name]


def load_passes(plugins: Iterable[str] = ()) -> None:
    """Register the built-in passes and pipelines, then the installed plugins, then `plugins` (files or
    modules): every command calls this before it parses a pipeline."""
    load_builtin_passes()
    for plugin in plugins:
        load_plugin(plugin)


def load_plugin(spec: str) -> None:
    """Load passes from a Python file path or an importable module name (after the built-ins).

    A file already loaded (same resolved path) is not executed again: its classes are registered already.
    """
    load_builtin_passes()  # built-ins own their names: a plugin reusing one is the newcomer
    path = Path(spec)
    if spec.endswith(".py") or path.exists():
        if not path.is_file():
            raise PipelineError(f"pass plugin file not found: {spec}")
        resolved = path.resolve()
        if resolved in _PLUGIN_FILES:
            return
        module_name = f"qdqc_plugin_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise PipelineError(f"cannot load pass plugin {spec}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:  # the plugin's own error: name the file, keep one line
            del sys.modules[module_name]
            raise PipelineError(f"pass plugin {spec} failed to load: {_one_line(exc)}") from None
        _PLUGIN_FILES.add(resolved)
        return
    try:
        importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (exc.name == spec or spec.startswith(exc.name + ".")):
            raise PipelineError(f"cannot import pass plugin module '{spec}': {exc}") from None
        raise PipelineError(f"pass plugin module '{spec}' failed to load: {_one_line(exc)}") from None
    except Exception as exc:
        raise PipelineError(f"pass plugin module '{spec}' failed to load: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    """The exception's type and the first line of its message (a SyntaxError names file and line)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def get_pass(name: str) -> type[Pass]:
    """The pass class registered under `name`, or a PipelineError listing the valid names."""
    load_builtin_passes()
    if name not in _PASSES:
        raise PipelineError(f"unknown pass '{name}' (valid passes: {', '.join(sorted(_PASSES))})")
    return _PASSES[name]


def all_passes() -> dict[str, type[Pass]]:
    """Every registered pass, sorted by name."""
    load_builtin_passes()
    return dict(sorted(_PASSES.items()))


def get_pipeline(name: str) -> str | None:
    """The text of a named pipeline, or None."""
    entry = get_named_pipeline(name)
    return entry.text if entry else None


def get_named_pipeline(name: str) -> NamedPipeline | None:
    """The named pipeline `name`, or None."""
    load_builtin_passes()
    return _PIPELINES.get(name)


def all_pipelines() -> dict[str, NamedPipeline]:
    """Every named pipeline by name."""
    load_builtin_passes()
    return dict(sorted(_PIPELINES.items()))
