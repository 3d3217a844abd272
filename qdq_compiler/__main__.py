"""`python -m qdq_compiler` runs the qdqc command line."""

import sys

from qdq_compiler.cli import main

sys.exit(main())
