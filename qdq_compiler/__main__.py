"""`python -m qdq_compiler` runs the qdqc command line (Ctrl-C while it starts up: `qdqc: aborted`, 130)."""

import sys

try:  # the same as qdq_compiler.console.run, inlined so that no import precedes the try
    from qdq_compiler.cli import main

    status = main()
except KeyboardInterrupt:
    sys.stderr.write("qdqc: aborted\n")
    status = 130
sys.exit(status)
