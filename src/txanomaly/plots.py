"""The figures of reports, evaluations and map-size searches, as matplotlib ``Figure`` objects.

Built with matplotlib's object API (no ``pyplot``, no global state, no display needed): every
function takes plain arrays and returns a :class:`~matplotlib.figure.Figure`;
:func:`to_png` renders one. Nothing here knows about models or files.

>>> fig = score_histogram(np.random.default_rng(0).gamma(2.0, size=500), threshold=5.0)
>>> to_png(fig)[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
True
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import SymLogNorm
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

#: Dots per inch of every PNG: sharp in a browser, small enough to embed.
DPI = 100
#: The widest figure, in inches: the HTML report's column is 1,200 px less 1 em of padding a
#: side (report.py's style sheet), and a PNG wider than that is shrunk to fit, its text with it.
#: At or under this width a font of ``s`` points shows at ``s * DPI / 72`` px.
MAX_WIDTH = 11.6
#: Font sizes (points) of the small multiples: 8 pt is 11 px at :data:`DPI`, the smallest
#: that reads comfortably; titles a step larger.
SMALL_FONT = 8
PANEL_TITLE_FONT = 9
FLAGGED_COLOUR = "#d62728"
NORMAL_COLOUR = "#1f77b4"
#: Above this magnitude a heavy-tailed component plane switches to a symmetric-log colour scale
#: (below it, e.g. counts of 1-5, a linear scale reads better).
WIDE_RANGE = 100.0


def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)  # constrained layout: no second "tight" pass
    return buf.getvalue()


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write the figure to ``path`` as PNG (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_png(fig))
    return path


# --------------------------------------------------------------------------- the map
def _grid_image(ax: Axes, fig: Figure, values: np.ndarray, cmap: str, label: str) -> None:
    image = ax.imshow(values, cmap=cmap, origin="upper", interpolation="nearest")
    rows, cols = values.shape
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    ax.tick_params(labelsize=SMALL_FONT)
    ax.set_xlabel("map column")
    ax.set_ylabel("map row")
    fig.colorbar(image, ax=ax, label=label, shrink=0.85)


def u_matrix(values: np.ndarray) -> Figure:
    """Heat map of the U-matrix: bright cells are units far from their neighbours (borders)."""
    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    _grid_image(ax, fig, np.asarray(values), "viridis",
                "mean distance to neighbouring prototypes (scaled units)")
    ax.set_title("U-matrix: bright cells separate clusters")
    return fig


def hit_map(hits: np.ndarray, flagged_hits: np.ndarray | None = None) -> Figure:
    """Transactions per unit; with ``flagged_hits``, a second panel of the share flagged."""
    panels = 1 if flagged_hits is None else 2
    fig = Figure(figsize=(5.5 * panels, 4.5), layout="constrained")
    ax = fig.add_subplot(1, panels, 1)
    _grid_image(ax, fig, np.asarray(hits), "Blues", "transactions")
    ax.set_title("Hit map: transactions per unit")
    if flagged_hits is not None:
        ax2 = fig.add_subplot(1, 2, 2)
        hits = np.asarray(hits, dtype=np.float64)
        share = np.divide(np.asarray(flagged_hits, dtype=np.float64), hits,
                          out=np.full(hits.shape, np.nan), where=hits > 0)
        _grid_image(ax2, fig, 100.0 * share, "Reds", "flagged (% of the unit's transactions)")
        ax2.set_title("Share flagged per unit (blank: no transactions)")
    return fig


def component_planes(prototypes: np.ndarray, names: Sequence[str], rows: int, cols: int,
                     log_colour: Sequence[bool] | None = None) -> Figure:
    """One small heat map per feature: that feature's prototype value on every unit.

    Features flagged in ``log_colour`` (heavy-tailed ones) get a symmetric-log colour scale when
    their values exceed :data:`WIDE_RANGE`.
    """
    fig, axes = _small_multiples(len(names), 4, (MAX_WIDTH / 4, 2.6))
    for j, (name, ax) in enumerate(zip(names, axes, strict=True)):
        plane = np.asarray(prototypes)[:, j].reshape(rows, cols)
        wide = np.abs(plane).max() > WIDE_RANGE
        norm = SymLogNorm(linthresh=1.0) if log_colour is not None and log_colour[j] and wide \
            else None
        image = ax.imshow(plane, cmap="coolwarm", interpolation="nearest", norm=norm)
        ax.set_title(_wrap(name), fontsize=PANEL_TITLE_FONT)
        ax.set_xticks([])
        ax.set_yticks([])
        bar = fig.colorbar(image, ax=ax, shrink=0.8)
        bar.ax.tick_params(labelsize=SMALL_FONT)
    fig.suptitle("Component planes: each feature's prototype values across the map "
                 "(original units)", fontsize=11)
    return fig


def prototype_projection(sample: np.ndarray, before: np.ndarray, after: np.ndarray,
                         rows: int, cols: int) -> Figure:
    """Data and prototypes on the data's first two principal components, before/after training.

    All three arrays are in the model's scaled space; neighbouring units are joined by lines so
    the grid's folding is visible.
    """
    pca = PCA(n_components=2, random_state=0).fit(sample)
    pts = pca.transform(sample)
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    for i, (title, weights) in enumerate((("before training (initial prototypes)", before),
                                          ("after training", after))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.scatter(pts[:, 0], pts[:, 1], s=3, c="#bbbbbb", alpha=0.5, label="transactions",
                   rasterized=True)
        _draw_grid(ax, pca.transform(np.asarray(weights)).reshape(rows, cols, 2))
        ax.set_title(f"Prototypes {title}")
        ratio = pca.explained_variance_ratio_
        ax.set_xlabel(f"PC 1 ({ratio[0]:.0%} of variance, scaled features)")
        ax.set_ylabel(f"PC 2 ({ratio[1]:.0%} of variance)")
        ax.legend(loc="upper right", fontsize=SMALL_FONT)
    return fig


def _draw_grid(ax: Axes, xy: np.ndarray) -> None:
    for r in range(xy.shape[0]):
        ax.plot(xy[r, :, 0], xy[r, :, 1], color=NORMAL_COLOUR, lw=0.8)
    for c in range(xy.shape[1]):
        ax.plot(xy[:, c, 0], xy[:, c, 1], color=NORMAL_COLOUR, lw=0.8)
    ax.scatter(xy[..., 0].ravel(), xy[..., 1].ravel(), s=14, c=NORMAL_COLOUR, zorder=3,
               label="prototypes")


# --------------------------------------------------------------------------- scores
def score_histogram(scores: np.ndarray, threshold: float, title: str | None = None) -> Figure:
    """Histogram of anomaly scores (log count axis) with the threshold marked."""
    scores = np.asarray(scores, dtype=np.float64)
    flagged = int((scores > threshold).sum())
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    bins = np.linspace(scores.min(), max(scores.max(), threshold), 80)
    ax.hist(scores[scores <= threshold], bins=list(bins), color=NORMAL_COLOUR, label="normal")
    ax.hist(scores[scores > threshold], bins=list(bins), color=FLAGGED_COLOUR,
            label=f"flagged ({flagged:,} of {len(scores):,})")
    ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("anomaly score (distance to best-matching unit, scaled units)")
    ax.set_ylabel("transactions (log scale)")
    ax.set_title(title or "Anomaly scores")
    ax.legend()
    return fig


def feature_distributions(values: np.ndarray, names: Sequence[str], flagged: np.ndarray,
                          axis_labels: Sequence[str] | None = None) -> Figure:
    """Per feature, the distribution of flagged vs normal transactions (densities)."""
    values = np.asarray(values, dtype=np.float64)
    flagged = np.asarray(flagged, dtype=bool)
    ncols = min(4, len(names))
    fig, axes = _small_multiples(len(names), ncols, (MAX_WIDTH / 4, 2.6))
    for j, (name, ax) in enumerate(zip(names, axes, strict=True)):
        col = values[:, j]
        lo, hi = np.quantile(col, [0.001, 0.999]) if len(col) else (0.0, 1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 40)
        _density(ax, col[~flagged], bins, NORMAL_COLOUR, "normal")
        if flagged.any():
            _density(ax, col[flagged], bins, FLAGGED_COLOUR, "flagged")
        ax.set_title(_wrap(name), fontsize=PANEL_TITLE_FONT)
        ax.set_xlabel(axis_labels[j] if axis_labels else "value", fontsize=SMALL_FONT)
        ax.tick_params(labelsize=SMALL_FONT)
        ax.set_yticks([])
        if j % ncols == 0:
            ax.set_ylabel("density", fontsize=SMALL_FONT)
        if j == 0:
            ax.legend(fontsize=SMALL_FONT)
    fig.suptitle("Feature distributions, flagged vs normal (density; ends clipped at the "
                 "0.1% / 99.9% quantiles)", fontsize=11)
    return fig


# --------------------------------------------------------------------------- evaluation, tuning
def pr_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
              pr_auc: Mapping[str, float], base_rate: float, title: str = "") -> Figure:
    """Precision-recall curves of several detectors; the dashed line is a random ranking."""
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.add_subplot()
    for name, (recall, precision) in curves.items():
        width = 2.2 if name == "som" else 1.2
        ax.plot(recall, precision, lw=width, label=f"{name} (PR-AUC {pr_auc[name]:.3f})",
                drawstyle="steps-post")
    ax.axhline(base_rate, color="grey", ls="--", lw=1, label=f"random ({base_rate:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall (share of labelled anomalies found)")
    ax.set_ylabel("precision (share of flags that are anomalies)")
    ax.set_title(title or "Precision-recall on the test rows")
    ax.legend(fontsize=SMALL_FONT)
    ax.grid(alpha=0.3)
    return fig


def tune_curves(labels: Sequence[str], metrics: Mapping[str, Sequence[float | None]],
                chosen: str) -> Figure:
    """One panel per metric across map sizes (in the given order); the recommended one starred."""
    fig, axes = _small_multiples(len(metrics), 3, (MAX_WIDTH / 3, 3.4))
    pick = list(labels).index(chosen)
    for i, ((name, values), ax) in enumerate(zip(metrics.items(), axes, strict=True)):
        ys = [np.nan if v is None else v for v in values]
        xs = list(range(len(labels)))
        ax.plot(xs, ys, marker="o", color=NORMAL_COLOUR)
        ax.plot([pick], [ys[pick]], marker="*", ms=16, color=FLAGGED_COLOUR,
                label=f"recommended {chosen}")
        ax.set_xticks(xs)
        ax.set_xticklabels(list(labels), fontsize=SMALL_FONT)
        ax.set_xlabel("map size (rows x cols)")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=SMALL_FONT)
    fig.suptitle("Map-size search (test rows)", fontsize=11)
    return fig


def _density(ax: Axes, values: np.ndarray, bins: np.ndarray, colour: str, label: str) -> None:
    """A filled density histogram; values beyond the bins count in the end bins."""
    counts, _ = np.histogram(np.clip(values, bins[0], bins[-1]), bins=bins, density=True)
    ax.stairs(counts, bins, fill=True, color=colour, alpha=0.6, label=label)


def _small_multiples(n: int, max_cols: int, size: tuple[float, float]
                     ) -> tuple[Figure, list[Axes]]:
    """A figure with ``n`` panels, at most ``max_cols`` a row, each ``size`` inches.

    ``max_cols * size[0]`` should not exceed :data:`MAX_WIDTH`, or the text is shrunk.
    """
    ncols = max(1, min(max_cols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    return fig, [fig.add_subplot(nrows, ncols, j + 1) for j in range(n)]


def _wrap(name: str, width: int = 26) -> str:
    """Break a long snake_case name onto two lines at an underscore."""
    if len(name) <= width:
        return name
    cut = name.rfind("_", 0, width)
    return name if cut <= 0 else name[:cut] + "\n" + name[cut:]


# --------------------------------------------------------------------------- the analysts' console
def transaction_timeline(times_ms: np.ndarray, amounts: np.ndarray, flagged: np.ndarray,
                         marked: int | None = None, title: str = "") -> Figure:
    """A user's transactions over time (amount on a log scale), flagged ones in red, the
    ``marked`` one (an index) ringed and joined to the time axis."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    times = np.asarray(times_ms, dtype="datetime64[ms]")
    amounts = np.maximum(np.asarray(amounts, dtype=np.float64), 0.01)  # log scale: no zero
    flags = np.asarray(flagged, dtype=bool)
    # Fixed margins: constrained layout measured every tick label twice and took most of
    # the ~0.5 s this figure cost (a picture the console draws on every transaction page).
    fig = Figure(figsize=(7.0, 2.6))
    fig.subplots_adjust(left=0.09, right=0.98, top=0.9, bottom=0.14)
    ax = fig.add_subplot()
    ax.scatter(times[~flags], amounts[~flags], s=14, color=NORMAL_COLOUR, alpha=0.7,
               label="normal")
    ax.scatter(times[flags], amounts[flags], s=22, color=FLAGGED_COLOUR, label="flagged")
    if marked is not None:
        ax.axvline(times[marked], color="#555", lw=0.8, ls=":")
        ax.scatter([times[marked]], [amounts[marked]], s=140, facecolors="none",
                   edgecolors="#222", linewidths=1.8, label="this transaction")
    ax.set_yscale("log")
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_ylabel("amount")
    ax.tick_params(labelsize=SMALL_FONT)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=SMALL_FONT, loc="upper left")  # "best" costs a search per point
    if title:
        ax.set_title(title, fontsize=PANEL_TITLE_FONT)
    return fig


def hourly_counts(hours_ms: np.ndarray, counts: np.ndarray, title: str) -> Figure:
    """Counts per hour as bars (hours without any left out of the data, shown as gaps)."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    fig = Figure(figsize=(7.0, 2.4))
    fig.subplots_adjust(left=0.09, right=0.98, top=0.88, bottom=0.16)
    ax = fig.add_subplot()
    hours = np.asarray(hours_ms, dtype="datetime64[ms]")
    ax.bar(hours, np.asarray(counts), width=np.timedelta64(50, "m"), color=FLAGGED_COLOUR,
           alpha=0.8)
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.tick_params(labelsize=SMALL_FONT)
    ax.set_ylabel("per hour")
    ax.set_title(title, fontsize=PANEL_TITLE_FONT)
    ax.grid(alpha=0.3, axis="y")
    return fig


def threshold_tradeoff(thresholds: np.ndarray, precision: np.ndarray, recall: np.ndarray,
                       alerts_per_day: np.ndarray, current: float,
                       chosen: float | None = None, title: str = "") -> Figure:
    """Calibration: precision and recall of the analysts' labels (left axis) and alerts a
    day (right axis) as the threshold moves; the threshold in force dashed, the recommended
    one solid."""
    fig = Figure(figsize=(7.5, 4.0), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(thresholds, precision, color=FLAGGED_COLOUR, lw=2, label="precision (labels)")
    ax.plot(thresholds, recall, color="#2ca02c", lw=2, label="recall of confirmed fraud")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("threshold (anomaly score)")
    ax.set_ylabel("share")
    right = ax.twinx()
    right.plot(thresholds, alerts_per_day, color=NORMAL_COLOUR, lw=1.5, ls="-.",
               label="alerts a day")
    right.set_ylabel("alerts a day (stored traffic)")
    right.set_yscale("symlog", linthresh=1.0)
    ax.axvline(current, color="#555", ls="--", lw=1, label=f"in force {current:.4g}")
    if chosen is not None:
        ax.axvline(chosen, color="#222", lw=1.6, label=f"recommended {chosen:.4g}")
    handles, labels = ax.get_legend_handles_labels()
    more, more_labels = right.get_legend_handles_labels()
    ax.legend(handles + more, labels + more_labels, fontsize=SMALL_FONT, loc="center right")
    ax.grid(alpha=0.3)
    ax.set_title(title or "Threshold trade-off from the analysts' decisions")
    return fig
