"""Labelled synthetic transactions: the demo data, and the ground truth for evaluation.

:func:`generate` makes ``n`` transactions by ``users`` account holders over ``days`` days, in
the flat record shape of :mod:`txanomaly.schema`, and labels a share of them as anomalies of
five kinds (:data:`ANOMALY_KINDS`). Everything is vectorised NumPy drawn from one
``np.random.default_rng(seed)``: the same arguments give the same data, on any machine.
Write them with :func:`txanomaly.io.write_table` (any format it reads) and the labels with
:func:`write_labels`.

The package is cut by concept:

- :mod:`~txanomaly.synth.population`: the world and each user's habits;
- :mod:`~txanomaly.synth.plan`: transactions before they are records, and the normal ones
  (about a third of the records lack the origin user id, deposits from outside, and a third
  the destination user id, payments to outside accounts, as in real exports);
- :mod:`~txanomaly.synth.anomalies`: the five kinds of planted anomaly;
- :mod:`~txanomaly.synth.records`: plans -> flat records;
- :mod:`~txanomaly.synth.labels` and :mod:`~txanomaly.synth.generator`: the labels, and
  :func:`generate`, which ties them together;
- :mod:`~txanomaly.synth.domains`: the other payment domains (:data:`DOMAINS`: card payments
  at merchants and at shop terminals, e-commerce, AML transfers), one module each, with their
  own anomaly kinds (:func:`domain_kinds`); ``generate(..., domain="p2p")``, the default, is
  the generator described above.

>>> result = generate(2_000, users=50, days=7, anomaly_rate=0.05, seed=1)
>>> result.transactions.height, result.labels["is_anomaly"].sum()
(2000, 100)
>>> result.transactions.columns == [*FLAT_COLUMNS, "extra"]
True
>>> counts = result.anomaly_counts()
>>> list(counts), sum(counts.values())
(['amount_spike', 'burst', 'unusual_hour', 'new_counterparty_large', 'cross_border'], 100)
>>> aml = generate(2_000, users=50, days=7, anomaly_rate=0.05, seed=1, domain="aml")
>>> aml.anomaly_counts()
{'fan_in': 25, 'fan_out': 25, 'cycle': 25, 'structuring': 25}
"""

from txanomaly.schema import FLAT_COLUMNS
from txanomaly.synth.anomalies import ANOMALY_KINDS, BURST_SIZES, MIN_HISTORY
from txanomaly.synth.domains import DOMAIN_KINDS, DOMAINS, domain_kinds
from txanomaly.synth.generator import DEFAULT_START, SynthResult, generate
from txanomaly.synth.labels import LABEL_COLUMNS, default_labels_path, write_labels
from txanomaly.synth.population import DAY_MS, HOUR_MS

__all__ = [
    "ANOMALY_KINDS", "BURST_SIZES", "DAY_MS", "DEFAULT_START", "DOMAINS", "DOMAIN_KINDS",
    "FLAT_COLUMNS", "HOUR_MS",
    "LABEL_COLUMNS", "MIN_HISTORY", "SynthResult", "default_labels_path", "domain_kinds",
    "generate", "write_labels",
]
