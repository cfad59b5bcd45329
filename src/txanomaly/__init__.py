"""txanomaly: find anomalous financial transactions with a Self-Organizing Map.

The core library (schema -> features -> model -> scoring -> reports) knows nothing about
HTTP or terminals; ``txanomaly.cli`` and ``txanomaly.service`` are thin adapters on top.
"""

from txanomaly.errors import TxAnomalyError

__version__ = "0.1.0"

__all__ = ["TxAnomalyError", "__version__"]
