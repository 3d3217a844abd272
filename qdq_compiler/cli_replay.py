"""`qdqc opt`'s calibration data flags, and the flags a reproducer's `qdqc opt` command replays with.

`opt` runs pipeline text as written, so the flags that are pass options (`--method`, `--two-pass`, ...) are
not its business: the text says `calibrate{method=max,exact=true}`. It takes the flags that name data:
`--calib`, `--calib-cache`, `--batch-size`, `--calib-limit`. A calibration cache is keyed by the float model
`qdqc calibrate` read, so it serves `opt` on that model only; a reproducer saved before `calibrate` therefore
carries its own copy of the statistics, keyed by the reproducer model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from qdq_compiler.cli_options import (
    flag_name,
    prepare_calibration,
    refuse_calibration_data_without_calibrate,
)
from qdq_compiler.pm import PassContext, PassManager

REPLAY_CACHE_NAME = "reproducer.qdqc"


def prepare_opt_calibration(model_path: str, manager: PassManager, opts: dict, pass_ctx: PassContext) -> None:
    """Load `opt`'s calibration data into ``pass_ctx`` when its pipeline calibrates; refuse data flags when
    it does not, and a pipeline that calibrates without data (one line, before any work)."""
    names = {p.name for p in manager.passes}
    refuse_calibration_data_without_calibrate(names, opts)
    if "calibrate" in names:
        prepare_calibration(model_path, opts, pass_ctx)


def _plugin_spec(spec: str) -> str:
    """A plugin file as an absolute path (the replay may run elsewhere); a module name as it is."""
    path = Path(spec)
    return str(path.resolve()) if spec.endswith(".py") or path.exists() else spec


@dataclasses.dataclass
class ReplayFlags:
    """The `qdqc opt` flags that run the rest of ``manager``'s pipeline as the failing command ran it.

    Called by :class:`~qdq_compiler.pm.instruments.Reproducer` with the failing pass's index and the
    reproducer folder; may write the calibration statistics the replay needs into that folder.
    """

    manager: PassManager
    opts: dict

    def __call__(self, index: int, folder: Path) -> list[str]:
        opts = self.opts
        flags: list[str] = []
        for plugin in opts.get("load_pass_plugin") or ():
            flags += ["--load-pass-plugin", _plugin_spec(str(plugin))]
        if opts.get("verify_each"):  # the verifier runs as part of each pass: a failure may come from it
            flags.append("--verify-each")
        if "calibrate" not in {p.name for p in self.manager.passes[index:]}:
            return flags
        if opts.get("calib"):
            flags += ["--calib", str(Path(opts["calib"]).resolve())]
            for name in ("batch_size", "calib_limit"):
                if opts.get(name):
                    flags += [flag_name(name), str(opts[name])]
        if opts.get("calib_cache"):
            flags += ["--calib-cache", str(_rekeyed_cache(Path(opts["calib_cache"]), folder))]
        return flags


def _rekeyed_cache(cache: Path, folder: Path) -> Path:
    """A copy of ``cache`` keyed by the reproducer model in ``folder`` (same statistics, data and bins)."""
    from qdq_compiler.calib import load_cache, model_sha256, read_cache_key, save_cache
    from qdq_compiler.ir import load_model, to_proto

    stored = read_cache_key(cache)
    stats = load_cache(cache, stored)
    reproducer = to_proto(load_model(folder / "reproducer.onnx"))
    target = folder / REPLAY_CACHE_NAME
    save_cache(target, stats, dataclasses.replace(stored, model_sha256=model_sha256(reproducer)))
    return target.resolve()
