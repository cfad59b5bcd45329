"""The console's own chart: the flag rate over time (the other pictures are
:mod:`txanomaly.plots`'), drawn in the same style (matplotlib, no pyplot state, PNG)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from txanomaly.plots import FLAGGED_COLOUR, NORMAL_COLOUR, PANEL_TITLE_FONT, SMALL_FONT

#: Buckets with fewer stored transactions are drawn as grey rings off the rate line.
FEW = 10


def flag_rate(rows: Sequence[tuple[int, int, int]], bucket_ms: int, title: str,
              per: str = "per hour") -> Figure:
    """The share flagged per bucket (top) over the transactions stored and flagged per bucket
    (bottom), from ``(bucket start ms, stored, flagged)`` rows; a bucket without any stored
    transaction is a gap, not a zero rate, and one with fewer than :data:`FEW` is a grey
    ring off the line. The dashed line is the whole window's rate."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    fig = Figure(figsize=(4.4, 3.2))  # the model page's right-hand column
    fig.subplots_adjust(left=0.14, right=0.97, top=0.91, bottom=0.15, hspace=0.12)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    top.set_title(title, fontsize=PANEL_TITLE_FONT)
    for ax in (top, bottom):
        ax.tick_params(labelsize=SMALL_FONT)
        ax.grid(alpha=0.3, axis="y")
    top.set_ylabel("% flagged", fontsize=SMALL_FONT)
    bottom.set_ylabel(per, fontsize=SMALL_FONT)
    if not rows:
        top.text(0.5, 0.5, "no stored transactions yet", ha="center", va="center",
                 transform=top.transAxes, color="#6b7280")
        return fig
    start = np.array([r[0] for r in rows], dtype=np.int64)
    stored = np.array([r[1] for r in rows], dtype=np.float64)
    flagged = np.array([r[2] for r in rows], dtype=np.float64)
    # Every bucket from the first to the last: missing ones break the line.
    every = np.arange(start[0], start[-1] + bucket_ms, bucket_ms, dtype=np.int64)
    rate = np.full(every.shape, np.nan)
    at_bucket = (start - start[0]) // bucket_ms
    rate[at_bucket] = 100.0 * flagged / stored
    # A bucket of a few transactions swings from 0 to 100 %: shown apart, not in the line.
    few = np.zeros(every.shape, dtype=bool)
    few[at_bucket[stored < FEW]] = True
    middle = (every + bucket_ms // 2).astype("datetime64[ms]")
    top.plot(middle, np.where(few, np.nan, rate), color=FLAGGED_COLOUR, lw=1.4,
             marker="o" if len(every) <= 48 else None, ms=3, label=per)
    if few.any():
        top.plot(middle[few], rate[few], ls="none", marker="o", ms=3.5, mfc="none",
                 color="#9ca3af", label=f"< {FEW} stored")
    overall = 100.0 * flagged.sum() / stored.sum()
    top.axhline(overall, color="#555", ls="--", lw=1, label=f"whole window {overall:.2f} %")
    top.legend(fontsize=SMALL_FONT, loc="upper left", frameon=False, ncol=3,
               handletextpad=0.4, columnspacing=1.0)
    top.set_ylim(0, max(float(np.nanmax(rate)) * 1.35, overall * 1.5, 0.1))
    width = np.timedelta64(int(bucket_ms * 0.8), "ms")
    at = (start + bucket_ms // 2).astype("datetime64[ms]")
    bottom.bar(at, stored, width=width, color=NORMAL_COLOUR, alpha=0.35, label="stored")
    bottom.bar(at, flagged, width=width, color=FLAGGED_COLOUR, alpha=0.9, label="flagged")
    bottom.legend(fontsize=SMALL_FONT, loc="upper left", frameon=False, ncol=2)
    bottom.set_ylim(0, float(stored.max()) * 1.3)
    locator = AutoDateLocator(minticks=3, maxticks=8)
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    return fig


__all__ = ["flag_rate"]
