"""Defaults that the library and the command line both show, written once.

This module imports nothing heavy, so ``txanomaly --help`` can display them without loading
PyTorch; :mod:`txanomaly.demo` and :mod:`txanomaly.tune` use the same values.
"""

from __future__ import annotations

from pathlib import Path

#: Where ``txanomaly demo`` writes everything.
DEMO_DIR = Path("txanomaly-demo")
#: Transactions the demo synthesises.
DEMO_ROWS = 200_000
#: Map sizes ``txanomaly tune`` tries.
TUNE_MAPS = ("5x5", "10x10", "15x15", "20x20")
