"""txanomaly on Apache Spark: the same reading, features, training and scoring, distributed.

Each stage runs the single-machine code inside the executors, so the results are the
single-machine engine's (docs/spark.md, "Equality"):

>>> from txanomaly import spark as txs                        # doctest: +SKIP
>>> session = txs.session("local[2]")                         # doctest: +SKIP
>>> read = txs.read_transactions(session, "lake/tx/*.jsonl")  # doctest: +SKIP
>>> features = txs.compute_features(read.frame, "standard")   # doctest: +SKIP
>>> model = txs.fit(features, "standard")                     # doctest: +SKIP
>>> model.save("model/")                                      # doctest: +SKIP
>>> scores = txs.score(read.frame, model)                     # doctest: +SKIP

- :func:`read_transactions`: Parquet, JSON Lines, Flagright JSON with the input rules;
  rejects with reasons;
- :func:`compute_features`: every feature set, bit for bit the batch engine's;
- :func:`fit`: the batch SOM, one distributed reduction per epoch; a ``TransactionModel``;
- :func:`score`: the model broadcast; the columns of ``txanomaly score``;
- :func:`load_history`: the service store's history (key rows and scored transactions)
  built on the cluster and bulk-loaded into SQLite or PostgreSQL (``COPY``).

Needs the ``[spark]`` extra (PySpark 4) and Java 17 or later.
"""

from txanomaly.spark.features import ORDER, compute_features
from txanomaly.spark.history import HistoryLoad, key_rows, load_history, transaction_rows
from txanomaly.spark.read import SparkRead, read_transactions
from txanomaly.spark.score import score
from txanomaly.spark.session import session
from txanomaly.spark.train import fit

__all__ = ["ORDER", "HistoryLoad", "SparkRead", "compute_features", "fit", "key_rows",
           "load_history", "read_transactions", "score", "session", "transaction_rows"]
