"""The `qdqc` console script and `python -m qdq_compiler`: a thin entry that imports the command line
inside a try, so that Ctrl-C during start-up (imports take a second or two) prints `qdqc: aborted` and exits
130 instead of showing a traceback. Keep this module free of heavy imports."""

from __future__ import annotations

import sys


def run() -> None:
    """Import the CLI, run it, exit with its status; Ctrl-C at any point is `qdqc: aborted`, exit 130."""
    try:
        from qdq_compiler.cli import main

        status = main()
    except KeyboardInterrupt:
        sys.stderr.write("qdqc: aborted\n")
        status = 130
    sys.exit(status)
